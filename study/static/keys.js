// Key hints (class "keys") show where a keyboard is likely: a fine pointer that can hover
// (style.css), or once any key has been pressed (a tablet with a keyboard).
document.addEventListener("keydown", function () {
  document.documentElement.classList.add("has-keyboard");
}, { once: true });
