// Kiln dashboard: live refresh of sections marked data-live, a pause button for them, fields
// checked by the server as they are typed (data-check), and a confirmation before forms marked
// data-confirm. Pages work without it.
(function () {
  "use strict";
  var paused = {};

  function refresh(section, timer) {
    var name = section.getAttribute("data-live");
    if (paused[name] || document.hidden) return;
    fetch(window.location.href, { headers: { "X-Kiln-Partial": name }, credentials: "same-origin" })
      .then(function (r) {
        if (r.redirected || !r.ok) throw new Error("status " + r.status);
        if (r.headers.get("X-Kiln-Live") === "done") window.clearInterval(timer.id);
        return r.text();
      })
      .then(function (html) {
        section.innerHTML = html;
        bindToggles(section);
        bindSelection(section);
      })
      .catch(function () { /* the next tick tries again */ });
  }

  // Ticking a run stops the refresh of its section, so the choice is not swept away.
  function bindSelection(root) {
    root.querySelectorAll("[data-select-all]").forEach(function (all) {
      all.onchange = function () {
        root.querySelectorAll("input[type=checkbox][name=" + all.getAttribute("data-select-all") + "]")
          .forEach(function (box) { box.checked = all.checked; });
      };
    });
    root.querySelectorAll("input[type=checkbox]").forEach(function (box) {
      box.addEventListener("change", function () {
        var live = box.closest("[data-live]");
        if (live && box.checked) {
          paused[live.getAttribute("data-live")] = true;
          bindToggles(live);
        }
      });
    });
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

  // Asks the server what it makes of a form's fields (a cron pattern and its timezone) and
  // shows its answer in the element named by data-check-target.
  function check(input) {
    var form = input.form;
    var target = document.getElementById(input.getAttribute("data-check-target"));
    if (!form || !target) return;
    var params = new URLSearchParams();
    form.querySelectorAll("[data-check]").forEach(function (field) { params.append(field.name, field.value); });
    fetch(input.getAttribute("data-check") + "?" + params.toString(), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("status " + r.status); return r.text(); })
      .then(function (html) {
        target.innerHTML = html;
        // The answer replaces what an earlier submit said about these fields.
        form.querySelectorAll(".flash.error").forEach(function (old) {
          if (!target.contains(old)) old.remove();
        });
      })
      .catch(function () { /* the next keystroke tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (section) {
      var every = parseInt(section.getAttribute("data-live-every"), 10) || 3000;
      bindToggles(section);
      bindSelection(section);
      var timer = {};
      timer.id = window.setInterval(function () { refresh(section, timer); }, every);
    });
    document.querySelectorAll("[data-check]").forEach(function (input) {
      var timer = null;
      input.addEventListener("input", function () {
        window.clearTimeout(timer);
        timer = window.setTimeout(function () { check(input); }, 250);
      });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  });
})();
