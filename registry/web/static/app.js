/* Adapter Registry pages: small progressive enhancements. Everything works without this file. */
(function () {
  "use strict";

  // Job page: poll the live JSON every 1.5 s and swap in the server-rendered section (SVG included).
  function liveJob(root) {
    var url = root.getAttribute("data-live-url");
    var last = null;
    var failures = 0;
    var timer = null;
    function tick() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (data) {
          failures = 0;
          if (data.html !== last) {
            var active = document.activeElement;
            var hadFocus = active && root.contains(active) ? active.id || active.tagName : null;
            root.innerHTML = data.html;
            last = data.html;
            if (hadFocus) {
              var again = document.getElementById(hadFocus) || root.querySelector(hadFocus);
              if (again && again.focus) { again.focus(); }
            }
            wireConfirm(root);
          }
          if (root.getAttribute("data-state") && root.getAttribute("data-state") !== data.state) {
            var announce = document.getElementById("job-announce");
            if (announce) { announce.textContent = "Job " + data.id + " is now " + data.state + "."; }
          }
          root.setAttribute("data-state", data.state);
          if (data.terminal) {
            root.setAttribute("data-terminal", "true");
            document.title = document.title.replace(/^(\[[a-z]+\] )?/, "[" + data.state + "] ");
            return;
          }
          timer = setTimeout(tick, document.hidden ? 5000 : 1500);
        })
        .catch(function () {
          failures += 1;
          timer = setTimeout(tick, Math.min(30000, 1500 * Math.pow(2, failures)));
        });
    }
    if (root.getAttribute("data-terminal") !== "true") { timer = setTimeout(tick, 1000); }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer && root.getAttribute("data-terminal") !== "true") {
        clearTimeout(timer); tick();
      }
    });
  }

  // Ask before destructive form posts (cancel).
  function wireConfirm(scope) {
    var forms = scope.querySelectorAll("form[data-confirm]");
    Array.prototype.forEach.call(forms, function (f) {
      if (f.getAttribute("data-wired")) { return; }
      f.setAttribute("data-wired", "1");
      f.addEventListener("submit", function (ev) {
        if (!window.confirm(f.getAttribute("data-confirm"))) { ev.preventDefault(); }
      });
    });
  }

  // Copy buttons next to code snippets.
  function wireCopy() {
    var buttons = document.querySelectorAll("[data-copy]");
    Array.prototype.forEach.call(buttons, function (b) {
      var box = b.closest(".snippet");
      var pre = box && box.querySelector("pre");
      if (!pre || !navigator.clipboard) { return; }
      b.hidden = false;
      b.addEventListener("click", function () {
        navigator.clipboard.writeText(pre.textContent).then(function () {
          b.textContent = "Copied";
          setTimeout(function () { b.textContent = "Copy"; }, 1500);
        });
      });
    });
  }

  // Filter forms: submit when a select changes (the button stays for keyboard and no-JS users).
  function wireAutosubmit() {
    var forms = document.querySelectorAll("form[data-autosubmit]");
    Array.prototype.forEach.call(forms, function (f) {
      Array.prototype.forEach.call(f.querySelectorAll("select"), function (s) {
        s.addEventListener("change", function () { f.submit(); });
      });
    });
  }

  // After a failed submit, move focus to the error summary so it is announced.
  function focusErrors() {
    var summary = document.getElementById("form-errors");
    if (summary) { summary.focus(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("job-live");
    if (live) { liveJob(live); }
    wireConfirm(document);
    wireCopy();
    wireAutosubmit();
    focusErrors();
  });
})();
