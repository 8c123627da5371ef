// Review page: the label buttons and the class list ("Set class") of each cell tile post to the API and update
// the tile, its outline on the frame, the counts and the differential without reloading. Without JavaScript the
// same forms submit normally.
(function () {
  "use strict";
  var root = document.getElementById("review");
  if (!root || !window.allscopeFetch) { return; }
  var errorLine = document.getElementById("review-error");

  function showError(message) {
    errorLine.textContent = message;
    errorLine.hidden = !message;
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
    var reviewer = tile.querySelector("[data-reviewer]");
    reviewer.textContent = (cell.reviewer_label || "\u2014") +
      (cell.label_source === "ai_accepted" ? " (AI accepted)" : "");
    reviewer.className = "badge " + (cell.reviewer_label || "");
    tile.querySelectorAll(".label-btn").forEach(function (button) {
      button.setAttribute("aria-pressed", button.value === cell.reviewer_label ? "true" : "false");
    });
    var box = root.querySelector('[data-box="' + cell.id + '"]');
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
})();
