// Kiln dashboard: live refresh of sections marked data-live, a pause button for them, and a
// confirmation before forms marked data-confirm. Pages work without it.
(function () {
  "use strict";
  var paused = {};

  function refresh(section) {
    var name = section.getAttribute("data-live");
    if (paused[name] || document.hidden) return;
    fetch(window.location.href, { headers: { "X-Kiln-Partial": name }, credentials: "same-origin" })
      .then(function (r) {
        if (r.redirected || !r.ok) throw new Error("status " + r.status);
        return r.text();
      })
      .then(function (html) {
        section.innerHTML = html;
        bindToggles(section);
      })
      .catch(function () { /* the next tick tries again */ });
  }

  function bindToggles(root) {
    root.querySelectorAll("[data-live-toggle]").forEach(function (button) {
      var name = button.getAttribute("data-live-toggle");
      button.setAttribute("aria-pressed", paused[name] ? "true" : "false");
      button.textContent = paused[name] ? "Resume live updates" : "Pause live updates";
      button.onclick = function () {
        paused[name] = !paused[name];
        bindToggles(root);
      };
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (section) {
      var every = parseInt(section.getAttribute("data-live-every"), 10) || 3000;
      bindToggles(section);
      window.setInterval(function () { refresh(section); }, every);
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  });
})();
