// Capture page: live view (MJPEG, falling back to JPEG snapshots), camera status line, analysis progress.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var image = document.getElementById("live-image");
  var paused = document.getElementById("live-paused");
  var statusLine = document.getElementById("camera-status");

  // The live view pauses when nobody touches the screen for a while: no encoding for an empty room,
  // and the stream never outlives the session's idle limit.
  var idleMinutes = parseFloat(document.body.dataset.idleMinutes || "10") || 10;
  var pauseAfterMs = Math.min(120, idleMinutes * 30) * 1000;
  var mode = "mjpeg", snapshotTimer = null, pauseTimer = null, running = false;

  function stamp(url) { return url + (url.indexOf("?") < 0 ? "?" : "&") + "t=" + Date.now(); }

  function snapshotLoop() {
    if (!running || mode !== "jpeg") { return; }
    var next = new Image();
    next.onload = function () { if (running) { image.src = next.src; } snapshotTimer = setTimeout(snapshotLoop, 300); };
    next.onerror = function () { snapshotTimer = setTimeout(snapshotLoop, 2000); };
    next.src = stamp(live.dataset.jpegUrl);
  }

  function startLive() {
    if (!image) { return; }
    running = true;
    paused.classList.add("hidden");
    image.classList.remove("hidden");
    if (mode === "mjpeg") { image.src = stamp(live.dataset.mjpegUrl); } else { snapshotLoop(); }
    armPause();
  }

  function stopLive() {
    running = false;
    if (snapshotTimer) { clearTimeout(snapshotTimer); snapshotTimer = null; }
    if (image) { image.removeAttribute("src"); image.classList.add("hidden"); }
    paused.classList.remove("hidden");
  }

  function armPause() {
    if (pauseTimer) { clearTimeout(pauseTimer); }
    pauseTimer = setTimeout(stopLive, pauseAfterMs);
  }

  if (image) {
    image.addEventListener("error", function () {
      if (running && mode === "mjpeg") { mode = "jpeg"; snapshotLoop(); }  // stream refused: use snapshots
    });
    document.getElementById("live-resume").addEventListener("click", startLive);
    ["pointerdown", "keydown", "touchstart"].forEach(function (name) {
      document.addEventListener(name, function () { if (running) { armPause(); } }, {passive: true});
    });
    window.addEventListener("pagehide", stopLive);
    startLive();
  }

  function pollCamera() {
    window.allscopeFetch(live.dataset.statusUrl).then(function (body) {
      statusLine.textContent = "Camera: " + body.status;
      statusLine.classList.toggle("problem", !body.ok);
    }).catch(function (error) {
      statusLine.textContent = "Camera: " + error.message;
      statusLine.classList.add("problem");
    });
  }
  if (live && statusLine) { pollCamera(); setInterval(pollCamera, 3000); }

  // Analysis progress: poll each unfinished frame until it is done or failed.
  function setField(item, name, value) {
    var el = item.querySelector('[data-field="' + name + '"]');
    if (el) { el.textContent = value; }
    return el;
  }

  // The quality gate's reason and what to do about it (focus, light, move the slide).
  function showAdvice(item, problems, lines) {
    var box = item.querySelector('[data-field="advice"]');
    if (!box) { return; }
    box.textContent = "";
    if (problems.length) {
      var reason = document.createElement("p");
      reason.className = "advice-reason";
      reason.textContent = "Unusable: " + problems.join(", ");
      box.appendChild(reason);
    }
    lines.forEach(function (line) {
      var p = document.createElement("p");
      p.textContent = line;
      box.appendChild(p);
    });
    box.classList.toggle("hidden", lines.length === 0);
  }

  function pollCapture(item) {
    window.allscopeFetch(item.dataset.pollUrl).then(function (body) {
      var status = setField(item, "status", body.status);
      status.className = "badge " + body.status;
      setField(item, "stage", body.stage).classList.toggle("hidden", body.status === "done");
      if (body.flag) {
        var flag = setField(item, "flag", body.flag.replace(/_/g, " "));
        flag.className = "badge " + body.flag;
      }
      ["cell_count", "blast_count", "review_count"].forEach(function (key) { setField(item, key, body[key]); });
      item.querySelector('[data-field="counts"]').classList.toggle("hidden", body.status !== "done");
      showAdvice(item, body.problems || [], body.advice || []);
      item.dataset.status = body.status;
      if (body.status === "queued" || body.status === "analysing") {
        setTimeout(function () { pollCapture(item); }, 1000);
      } else {
        var discard = item.querySelector("[data-discard]");  // finished: a bad frame may now be discarded
        if (discard) { discard.classList.remove("hidden"); }
      }
    }).catch(function (error) {
      setField(item, "stage", error.message);
      setTimeout(function () { pollCapture(item); }, 5000);
    });
  }
  document.querySelectorAll(".capture-item").forEach(function (item) {
    if (item.dataset.status === "queued" || item.dataset.status === "analysing") { pollCapture(item); }
  });
})();
