// Monitor Manager console: auto-refresh for pages that ask for it (<body data-refresh="30">).
// Progressive: every page works without this file. The page reloads only while it is visible,
// nothing is being typed or selected, and the person has not paused it (kept in localStorage).
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!seconds) return;
  var key = "mm-console-refresh-paused";
  var button = document.getElementById("refresh-toggle");
  function paused() {
    try { return window.localStorage.getItem(key) === "1"; } catch (e) { return false; }
  }
  function show() {
    if (!button) return;
    button.textContent = button.getAttribute(paused() ? "data-off" : "data-on");
    button.hidden = false;
  }
  function busy() {
    var el = document.activeElement;
    if (el && /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName)) return true;
    var sel = window.getSelection && window.getSelection();
    return !!(sel && String(sel).length);
  }
  if (button) {
    button.addEventListener("click", function () {
      try { window.localStorage.setItem(key, paused() ? "0" : "1"); } catch (e) { /* private mode */ }
      show();
    });
  }
  show();
  window.setInterval(function () {
    if (!paused() && document.visibilityState === "visible" && !busy()) {
      window.location.reload();
    }
  }, seconds * 1000);
})();
