// Shows the chosen picture before it is sent. Optional: the form works without it.
// It draws into a canvas from the file itself, so no blob: or data: URL is needed and
// the page's Content-Security-Policy can stay at 'self'.
"use strict";
(function () {
  var input = document.getElementById("avatar-input");
  var canvas = document.getElementById("avatar-preview");
  var note = document.getElementById("avatar-preview-note");
  if (!input || !canvas || !note || !window.createImageBitmap) {
    return;
  }
  var maxBytes = parseInt(input.getAttribute("data-max-bytes") || "0", 10);
  input.addEventListener("change", function () {
    var file = input.files && input.files[0];
    canvas.hidden = true;
    note.textContent = "";
    if (!file) {
      return;
    }
    if (maxBytes && file.size > maxBytes) {
      note.textContent = "This file is too large: pictures are limited to " +
        Math.floor(maxBytes / 1048576) + " MiB.";
      return;
    }
    createImageBitmap(file).then(function (bitmap) {
      var side = canvas.width;
      var scale = Math.max(side / bitmap.width, side / bitmap.height);
      var w = bitmap.width * scale;
      var h = bitmap.height * scale;
      var ctx = canvas.getContext("2d");
      ctx.clearRect(0, 0, side, side);
      ctx.drawImage(bitmap, (side - w) / 2, (side - h) / 2, w, h);
      canvas.hidden = false;
      note.textContent = "Preview. Press \u201cUpload picture\u201d to save it.";
    }, function () {
      note.textContent = "This file does not look like a picture; it will be refused.";
    });
  });
})();
