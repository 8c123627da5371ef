// allscope UI helpers: idle logout (with a warning) on a shared touchscreen, drafts of half-typed forms,
// CSRF header for fetch(), back links.
(function () {
  "use strict";
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  window.allscopeCsrf = csrfMeta ? csrfMeta.content : "";

  // fetch() wrapper that sends the CSRF token and JSON, and returns parsed JSON or throws one-line errors.
  window.allscopeFetch = function (url, options) {
    options = options || {};
    options.headers = Object.assign({"X-CSRFToken": window.allscopeCsrf, "Accept": "application/json"},
                                    options.headers || {});
    if (options.json !== undefined) {
      options.body = JSON.stringify(options.json);
      options.headers["Content-Type"] = "application/json";
      delete options.json;
    }
    options.credentials = "same-origin";
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) { throw new Error(body.error || ("request failed (" + response.status + ")")); }
        return body;
      });
    });
  };

  // Idle logout: any touch, click or key resets the timer. WARN_S before the end a banner counts down the
  // seconds left with a "Stay logged in" button; at zero the logout form is posted (idle=1: a half-typed
  // form's draft is kept for the same user, see below). Activity that sends no request (typing a long form)
  // pings the server now and then, so that the server's own idle clock (webui/kit/security.py) agrees.
  // A scroll is not activity: a page scrolls by itself (a field scrolled into view, an anchor); a finger
  // scrolling touches first, a mouse wheel is "wheel".
  var minutes = parseFloat(document.body.dataset.idleMinutes || "");
  var form = document.getElementById("logout-form");
  var pingUrl = document.body.dataset.pingUrl || "";
  var user = document.body.dataset.user || "";
  if (minutes > 0 && form) {
    var totalMs = minutes * 60 * 1000;
    var warnMs = Math.min(60 * 1000, totalMs / 2);
    var logoutTimer = null, warnTimer = null, tick = null, deadline = 0, lastPing = Date.now();
    var banner = document.createElement("div");
    banner.className = "idle-warning hidden";
    banner.id = "idle-warning";
    banner.setAttribute("role", "alertdialog");
    banner.setAttribute("aria-live", "assertive");
    var text = document.createElement("p");
    var stay = document.createElement("button");
    stay.type = "button";
    stay.className = "btn primary big";
    stay.textContent = "Stay logged in";
    banner.appendChild(text);
    banner.appendChild(stay);
    document.body.appendChild(banner);

    var showCountdown = function () {
      var left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
      text.textContent = "No activity: you will be logged out in " + left + " second" + (left === 1 ? "" : "s") +
        ". Anything typed is kept as a draft for you.";
    };
    var ping = function () {
      lastPing = Date.now();
      if (pingUrl && window.allscopeFetch) {
        window.allscopeFetch(pingUrl, {method: "POST"}).catch(function () { /* the next page load tells */ });
      }
    };
    var reset = function () {
      if (logoutTimer) { clearTimeout(logoutTimer); }
      if (warnTimer) { clearTimeout(warnTimer); }
      if (tick) { clearInterval(tick); tick = null; }
      banner.classList.add("hidden");
      deadline = Date.now() + totalMs;
      warnTimer = setTimeout(function () {
        banner.classList.remove("hidden");
        showCountdown();
        tick = setInterval(showCountdown, 1000);
      }, totalMs - warnMs);
      logoutTimer = setTimeout(function () {
        if (window.allscopeDrafts) { window.allscopeDrafts.saveAll(); }
        form.querySelector('input[name="idle"]').value = "1";
        form.submit();
      }, totalMs);
    };
    var activity = function () {
      reset();
      if (Date.now() - lastPing > Math.min(15 * 1000, totalMs / 4)) { ping(); }
    };
    stay.addEventListener("click", function () { ping(); reset(); });
    ["pointerdown", "keydown", "touchstart", "wheel", "input"].forEach(function (name) {
      document.addEventListener(name, activity, {passive: true});
    });
    reset();
  }

  // Drafts: a form marked data-draft="name" keeps what was typed in localStorage, keyed by user, form and page,
  // and gets it back when the page is opened again (after an idle logout and a new log-in, a reload, a
  // crash). Passwords, files and hidden fields are never stored. A draft is dropped when the form was sent and
  // the next page is not that form refused (the server keeps a refused form's input itself), and at a
  // deliberate log-out (every draft of that user).
  var PREFIX = "allscope-draft:";
  var storage = null;
  try { storage = window.localStorage; } catch (error) { storage = null; }
  var draftKey = function (draftForm) {
    return PREFIX + user + ":" + draftForm.dataset.draft + ":" + window.location.pathname;
  };
  var draftFields = function (draftForm) {
    return Array.prototype.filter.call(draftForm.elements, function (el) {
      return el.name && el.name !== "csrf_token" && !/^(password|hidden|file|submit|button)$/.test(el.type);
    });
  };
  var collect = function (draftForm) {
    var values = {};
    draftFields(draftForm).forEach(function (el) {
      if (el.type === "checkbox" || el.type === "radio") {
        values[el.name + "=" + el.value] = el.checked;
      } else {
        values[el.name] = el.value;
      }
    });
    return values;
  };
  var apply = function (draftForm, values) {
    draftFields(draftForm).forEach(function (el) {
      if (el.type === "checkbox" || el.type === "radio") {
        if ((el.name + "=" + el.value) in values) { el.checked = values[el.name + "=" + el.value]; }
      } else if (el.name in values) {
        el.value = values[el.name];
      }
    });
  };
  var read = function (key) {
    try { return JSON.parse(storage.getItem(key) || "null"); } catch (error) { return null; }
  };
  var save = function (draftForm, submitted) {
    try {
      storage.setItem(draftKey(draftForm), JSON.stringify({values: collect(draftForm), submitted: !!submitted,
                                                           at: Date.now()}));
    } catch (error) { /* storage full or refused: the form still works */ }
  };
  var draftForms = user && storage ? document.querySelectorAll("form[data-draft]") : [];
  window.allscopeDrafts = {saveAll: function () {
    Array.prototype.forEach.call(draftForms, function (draftForm) { save(draftForm, false); });
  }};
  if (user && storage) {
    var here = {};
    var refused = !!document.querySelector(".field-error, .error-summary, .error-message[role=alert]");
    Array.prototype.forEach.call(draftForms, function (draftForm) {
      var key = draftKey(draftForm);
      here[key] = true;
      var draft = read(key);
      if (draft && draft.submitted && refused) {
        storage.removeItem(key);  // sent and refused: the page shows what was typed, with the errors
      } else if (draft && draft.values) {
        apply(draftForm, draft.values);
        var note = document.createElement("p");
        note.className = "flash draft-note";
        note.setAttribute("role", "status");
        note.textContent = "A draft you had not saved was restored. ";
        var drop = document.createElement("button");
        drop.type = "button";
        drop.className = "btn";
        drop.textContent = "Discard the draft";
        drop.addEventListener("click", function () {
          storage.removeItem(key);
          window.location.reload();
        });
        note.appendChild(drop);
        draftForm.parentNode.insertBefore(note, draftForm);
      }
      var timer = null;
      draftForm.addEventListener("input", function () {
        if (timer) { clearTimeout(timer); }
        timer = setTimeout(function () { save(draftForm, false); }, 400);
      });
      draftForm.addEventListener("change", function () { save(draftForm, false); });
      draftForm.addEventListener("submit", function () { save(draftForm, true); });
    });
    // Sent elsewhere and accepted: the draft of a form that is not on this page and was sent is done with.
    for (var i = storage.length - 1; i >= 0; i--) {
      var key = storage.key(i);
      if (key && key.indexOf(PREFIX + user + ":") === 0 && !here[key]) {
        var draft = read(key);
        if (draft && draft.submitted) { storage.removeItem(key); }
      }
    }
    if (form) {
      form.addEventListener("submit", function () {
        if (form.querySelector('input[name="idle"]').value) { return; }  // idle: keep them for this user
        for (var j = storage.length - 1; j >= 0; j--) {
          var k = storage.key(j);
          if (k && k.indexOf(PREFIX + user + ":") === 0) { storage.removeItem(k); }
        }
      });
    }
  }

  document.querySelectorAll("[data-back]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      if (window.history.length > 1) { event.preventDefault(); window.history.back(); }
    });
  });

  // Buttons that ask before acting: <button data-confirm="Sign this report?">
  document.querySelectorAll("[data-confirm]").forEach(function (el) {
    el.addEventListener("click", function (event) {
      if (!window.confirm(el.dataset.confirm)) { event.preventDefault(); }
    });
  });
})();
