// Screen check: send the viewport size and whether the primary pointer is coarse (touch).
(function () {
  "use strict";
  var form = document.getElementById("check-form");
  function fill() {
    document.getElementById("width").value = String(Math.floor(window.innerWidth));
    document.getElementById("height").value = String(Math.floor(window.innerHeight));
    var coarse = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
    document.getElementById("touch").value = coarse ? "1" : "0";
  }
  fill();
  // Enabled only now: a click before this script ran would send an empty size.
  document.getElementById("check-continue").disabled = false;
  window.addEventListener("resize", fill);
  form.addEventListener("submit", fill);
})();
