// The in-app PDF viewer: Print prints the framed PDF (the page itself when the frame cannot print).
(function () {
  "use strict";
  var button = document.getElementById("pdf-print");
  var frame = document.getElementById("pdf-frame");
  if (!button || !frame) { return; }
  button.addEventListener("click", function () {
    try {
      frame.contentWindow.focus();
      frame.contentWindow.print();
    } catch (error) {
      window.print();
    }
  });
})();
