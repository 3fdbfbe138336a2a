// Send the participant back to the recruiting platform a few seconds after showing the code.
(function () {
  "use strict";
  var link = document.getElementById("completion-link");
  var seconds = Number(link.getAttribute("data-auto-redirect") || "3");
  window.setTimeout(function () { window.location.assign(link.href); }, seconds * 1000);
})();
