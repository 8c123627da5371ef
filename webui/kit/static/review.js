// Review page. Without JavaScript everything still works: a tile's thumbnail links to #cell-N, whose :target
// shows the enlarged view; its label buttons submit a normal form; "Next flagged" and "Show in frame" are links.
// With it: labels post to the API and update the tile, its outline and the counts without reloading; "Next
// flagged" follows the cells still to review as they change; "Show in frame" zooms the frame onto the cell.
// The class list ("Set class") of a tile posts the same way and updates the differential too.
(function () {
  "use strict";
  var root = document.getElementById("review");
  if (!root || !window.allscopeFetch) { return; }
  var errorLine = document.getElementById("review-error");
  var noteLine = document.getElementById("review-note");
  var labels = ["blast", "normal", "other", "unusable"];
  root.querySelectorAll(".label-btn").forEach(function (button) {
    if (labels.indexOf(button.value) < 0) { labels.push(button.value); }
  });

  function showError(message) {
    errorLine.textContent = message;
    errorLine.hidden = !message;
  }

  function showNote(message) {
    noteLine.textContent = message;
    noteLine.hidden = !message;
  }

  function setVerdictClass(el, finalLabel, open) {
    Array.prototype.slice.call(el.classList).forEach(function (name) {
      if (name.indexOf("v-") === 0) { el.classList.remove(name); }
    });
    el.classList.add("v-" + finalLabel);
    el.classList.toggle("needs-review", open);
  }

  function updateCounts(counts) {
    root.querySelectorAll("[data-count]").forEach(function (el) {
      var value = el.dataset.count.split(".").reduce(function (obj, key) {
        return obj === undefined || obj === null ? undefined : obj[key];
      }, counts);
      if (/percentage$/.test(el.dataset.count)) {
        el.textContent = value === null || value === undefined ? "n/a" : value.toFixed(1) + " %";
      } else if (value !== undefined) {
        el.textContent = value;
      }
    });
  }

  function updateBlockers(reasons) {
    var list = document.getElementById("blockers");
    if (!list || !reasons) { return; }
    list.textContent = "";
    reasons.forEach(function (reason) {
      var item = document.createElement("li");
      item.textContent = reason;
      list.appendChild(item);
    });
    list.hidden = reasons.length === 0;
  }

  function updateTile(tile, cell) {
    var open = cell.needs_review && !cell.edge && !cell.reviewer_label;
    setVerdictClass(tile, cell.final_label, open);
    tile.dataset.final = cell.final_label;
    var reviewer = tile.querySelector("[data-reviewer]");
    reviewer.textContent = (cell.reviewer_label || "\u2014") +
      (cell.label_source === "ai_accepted" ? " (AI accepted)" : "");
    reviewer.className = "badge " + (cell.reviewer_label || "");
    tile.querySelector("[data-tag]").textContent = cell.final_label + " " + Math.round(cell.p_blast * 100) + "%";
    tile.querySelectorAll(".label-btn").forEach(function (button) {
      button.setAttribute("aria-pressed", button.value === cell.reviewer_label ? "true" : "false");
    });
    var box = document.getElementById("box-" + cell.id);
    if (box) { setVerdictClass(box, cell.final_label, open); }
  }

  root.querySelectorAll(".label-form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      var button = event.submitter;
      var select = form.querySelector("select[name=label]");
      var label = button && button.value ? button.value : (button && select ? select.value : "");
      if (!label) { return; }  // old browser: let the form post normally
      event.preventDefault();
      var tile = form.closest(".tile");
      tile.classList.add("busy");
      window.allscopeFetch(form.dataset.api, {method: "POST", json: {label: label}})
        .then(function (body) {
          showError("");
          updateTile(tile, body.cell);
          updateCounts(body.counts);
          updateBlockers(body.sign_blockers);
        })
        .catch(function (error) { showError(error.message); })
        .then(function () { tile.classList.remove("busy"); });
    });
  });

  // --- opening a cell, next flagged ---------------------------------------------------------------------
  function tileOf(hash) {
    var el = hash && hash.length > 1 ? document.getElementById(hash.slice(1)) : null;
    return el && el.classList.contains("tile") ? el : null;
  }

  function reveal(el) {  // open the collapsed sections around an element
    for (var node = el; node; node = node.parentElement) {
      if (node.tagName === "DETAILS") { node.open = true; }
    }
  }

  var current = null;
  function markCurrent(tile) {
    if (current) { current.classList.remove("current"); }
    current = tile;
    if (tile) { tile.classList.add("current"); reveal(tile); }
  }

  function openCell(tile) {
    reveal(tile);
    showNote("");
    if (window.location.hash === "#" + tile.id) {
      tile.scrollIntoView({block: "center"});
    } else {
      window.location.hash = tile.id;
    }
    markCurrent(tile);
  }

  function nextFlagged() {
    var open = Array.prototype.slice.call(root.querySelectorAll("article.tile.needs-review"));
    if (!open.length) { return null; }
    var from = tileOf(window.location.hash) || current;
    if (!from) { return open[0]; }
    var after = open.filter(function (tile) {
      return tile !== from && (from.compareDocumentPosition(tile) & Node.DOCUMENT_POSITION_FOLLOWING);
    });
    return after[0] || open.filter(function (tile) { return tile !== from; })[0] || null;
  }

  root.querySelectorAll("[data-next-flagged]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      var tile = nextFlagged();
      if (tile) {
        openCell(tile);
      } else {
        var shown = tileOf(window.location.hash);
        if (shown) { window.location.hash = "t-" + shown.dataset.cellId; }
        showNote("No flagged cell is left to review.");
      }
    });
  });

  // --- show in frame -------------------------------------------------------------------------------------
  var ZOOM = 3;

  function unzoom(frame) {
    frame.classList.remove("zoomed");
    frame.querySelectorAll("img, .overlay").forEach(function (el) { el.style.transform = ""; });
    var button = frame.closest(".frame-card").querySelector("[data-unzoom]");
    if (button) { button.hidden = true; }
  }

  function showInFrame(cellId) {
    var box = document.getElementById("box-" + cellId);
    if (!box) { return false; }
    var frame = box.closest(".frame");
    root.querySelectorAll(".box.focus").forEach(function (el) { el.classList.remove("focus"); });
    root.querySelectorAll(".frame.zoomed").forEach(unzoom);
    box.classList.add("focus");
    var width = parseFloat(frame.dataset.width), height = parseFloat(frame.dataset.height);
    var x = parseFloat(box.getAttribute("x")) + parseFloat(box.getAttribute("width")) / 2;
    var y = parseFloat(box.getAttribute("y")) + parseFloat(box.getAttribute("height")) / 2;
    var card = frame.closest(".frame-card");
    card.querySelector("[data-unzoom]").hidden = false;
    reveal(card);
    window.location.hash = card.id;  // closes the enlarged cell, scrolls to the frame's caption
    // scaled ZOOM times about the top left corner, then moved so that the cell is in the middle of the part of
    // the frame on screen (but never past the frame's own edges); percentages of the frame's box
    var rect = frame.getBoundingClientRect();
    var shown = Math.max(0.2, Math.min(1, (window.innerHeight - rect.top) / rect.height));
    function shift(centre, middle) { return Math.min(0, Math.max((1 - ZOOM) * 100, 100 * middle - ZOOM * 100 * centre)); }
    var transform = "translate(" + shift(x / width, 0.5).toFixed(2) + "%, " + shift(y / height, shown / 2).toFixed(2) +
      "%) scale(" + ZOOM + ")";
    frame.querySelectorAll("img, .overlay").forEach(function (el) { el.style.transform = transform; });
    frame.classList.add("zoomed");
    return true;
  }

  root.querySelectorAll("[data-show-in-frame]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      if (showInFrame(link.dataset.showInFrame)) { event.preventDefault(); }
    });
  });
  root.querySelectorAll("[data-unzoom]").forEach(function (button) {
    button.addEventListener("click", function () { unzoom(button.closest(".frame-card").querySelector(".frame")); });
  });
  root.querySelectorAll("[data-open-frames]").forEach(function (link) {
    link.addEventListener("click", function () { document.getElementById("frames").open = true; });
  });

  // a tapped thumbnail or outline opens its cell: mark it, and open its group when it is collapsed
  function followHash() {
    var tile = tileOf(window.location.hash);
    if (tile) { markCurrent(tile); }
    var target = window.location.hash.length > 1 ? document.getElementById(window.location.hash.slice(1)) : null;
    if (target && !tile) { reveal(target); }
  }
  window.addEventListener("hashchange", followHash);
  followHash();
  document.addEventListener("keydown", function (event) {
    var tile = tileOf(window.location.hash);
    if (event.key === "Escape" && tile) { window.location.hash = "t-" + tile.dataset.cellId; }
  });
})();
