// allscope UI helpers: idle logout on a shared touchscreen, CSRF header for fetch(), back links.
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

  // Idle logout: any touch, click or key resets the timer; on expiry the logout form is posted.
  var minutes = parseFloat(document.body.dataset.idleMinutes || "");
  var form = document.getElementById("logout-form");
  if (minutes > 0 && form) {
    var timer = null;
    var reset = function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(function () {
        form.querySelector('input[name="idle"]').value = "1";
        form.submit();
      }, minutes * 60 * 1000);
    };
    ["pointerdown", "keydown", "touchstart", "scroll"].forEach(function (name) {
      document.addEventListener(name, reset, {passive: true});
    });
    reset();
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
