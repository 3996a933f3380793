// The script every page loads: CSRF for htmx requests and the keyboard-help overlay.
// An ES module (deferred, after htmx); no inline scripts anywhere (the CSP forbids them).

import { typingInto } from "./keys.js";

// Cookie-authenticated writes need the session's CSRF token; htmx sends it as a header.
document.addEventListener("htmx:configRequest", function (event) {
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) {
    event.detail.headers["X-CSRF-Token"] = meta.content;
  }
});

function setHelp(open) {
  var help = document.getElementById("keys-help");
  if (help) {
    help.hidden = !open;
  }
}

// `?` toggles the list of the page's keys (the page declares them in a <dl class="keys">).
document.addEventListener("keydown", function (event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  if (typingInto(event.target)) {
    return;
  }
  var help = document.getElementById("keys-help");
  if (!help) {
    return;
  }
  if (event.key === "?") {
    event.preventDefault();
    setHelp(help.hidden);
  } else if (event.key === "Escape" && !help.hidden) {
    event.preventDefault();
    setHelp(false);
  }
});

document.addEventListener("click", function (event) {
  var target = event.target;
  if (!(target instanceof Element)) {
    return;
  }
  if (target.closest("[data-keys-toggle]")) {
    event.preventDefault();
    var help = document.getElementById("keys-help");
    setHelp(help !== null && help.hidden);
  } else if (target.id === "keys-help" || target.closest("[data-keys-close]")) {
    setHelp(false);
  }
});
