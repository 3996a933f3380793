// The leases of the tasks this page holds, and leasing more (every batch comes as HTML).
//
// `held`: the tasks leased to this page and not decided. A heartbeat renews them while the
// page is visible and someone used it in the last IDLE_MS; a beacon (it outlives the page)
// gives them back when the page is hidden or closed, or nobody is there. A renewal takes
// back what nobody else leased meanwhile; the rest is lost, and the page lets it go.

import {
  clearMessage,
  csrfToken,
  errorOf,
  leaseSeconds,
  nextUrl,
  postJSON,
  prefetchBox,
  releaseUrl,
  renewUrl,
  showMessage,
} from "./shared.js";

var IDLE_MS = 5 * 60 * 1000;
var held = {};
var away = false; // the leases were given back; the next renewal takes them again
var idle = false; // given back because nobody was there: the next key only wakes the page
var lastInput = Date.now();
var renewing = null;
var lostHandler = function () {};
//: Task ids this page was handed, newest last; sent as `exclude` so none comes back twice.
var SEEN_LIMIT = 800;
var seen = [];

function heldIds() {
  return Object.keys(held).map(Number);
}

export function hold(ids) {
  ids.forEach(function (id) {
    held[id] = true;
  });
  if (away && ids.length) {
    sendRelease(ids); // leased while the page was hidden: not for now
  }
}

export function letGo(ids) {
  ids.forEach(function (id) {
    delete held[id];
  });
}

function sendRelease(ids) {
  var body = new URLSearchParams();
  body.set("csrf_token", csrfToken()); // a beacon cannot set the CSRF header
  body.set("task_ids", ids.join(","));
  if (!navigator.sendBeacon || !navigator.sendBeacon(releaseUrl, body)) {
    fetch(releaseUrl, { method: "POST", credentials: "same-origin", body: body, keepalive: true }).catch(
      function () {}
    );
  }
}

function release() {
  if (away) {
    return;
  }
  away = true;
  var ids = heldIds();
  if (ids.length) {
    sendRelease(ids);
  }
}

function renew() {
  if (renewing) {
    return renewing;
  }
  var ids = heldIds();
  if (!ids.length) {
    return Promise.resolve();
  }
  renewing = postJSON(renewUrl, { task_ids: ids })
    .then(
      function (result) {
        if (!result.ok) {
          errorOf(result);
          return;
        }
        var lost = result.data.lost.filter(function (id) {
          return held[id];
        });
        if (lost.length) {
          letGo(lost);
          lostHandler(lost);
        }
      },
      function () {} // offline for a moment: the next beat tries again
    )
    .then(function () {
      renewing = null;
    });
  return renewing;
}

function comeBack() {
  away = false;
  return renew();
}

function beat() {
  if (document.visibilityState !== "visible") {
    return;
  }
  if (Date.now() - lastInput > IDLE_MS) {
    if (!idle) {
      idle = true;
      release();
      showMessage("You were away, so your tasks went back to the queue. Press a key to go on.", "info");
    }
    return;
  }
  renew();
}

export function remember(ids) {
  ids.forEach(function (id) {
    if (seen.indexOf(id) < 0) {
      seen.push(id);
    }
  });
  if (seen.length > SEEN_LIMIT) {
    seen.splice(0, seen.length - SEEN_LIMIT);
  }
}

// Leases the next `n` tasks; resolves to the batch element, parked in the hidden box so its
// images load now.
export function fetchBatch(n) {
  var body = new URLSearchParams();
  body.set("n", String(n));
  body.set("exclude", seen.join(","));
  return fetch(nextUrl, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrfToken() },
    body: body,
  })
    .then(function (response) {
      if (response.status === 401) {
        errorOf({ status: 401 });
      }
      if (!response.ok) {
        throw new Error("the server answered " + response.status);
      }
      return response.text();
    })
    .then(function (html) {
      var holder = document.createElement("div");
      holder.innerHTML = html; // inert: no script in it runs, and the CSP allows none
      var batch = holder.querySelector(".batch");
      if (batch) {
        var ids = Array.prototype.map.call(batch.querySelectorAll("[data-task-id]"), function (el) {
          return Number(el.dataset.taskId);
        });
        remember(ids);
        hold(ids);
        prefetchBox.appendChild(batch);
      }
      return batch;
    });
}

// Tasks that went to someone else while the page was away: `handler(ids)` lets them go.
export function onLost(handler) {
  lostHandler = handler;
}

// Renews the leases while someone is at the page, gives them back when nobody is.
export function watchLeases() {
  window.setInterval(beat, Math.max(500, (leaseSeconds * 1000) / 3));
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") {
      release();
    } else if (!idle) {
      comeBack();
    }
  });
  window.addEventListener("pagehide", release);
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) {
      comeBack(); // back from the browser's page cache
    }
  });
  ["keydown", "pointerdown", "wheel"].forEach(function (type) {
    document.addEventListener(
      type,
      function (event) {
        lastInput = Date.now();
        if (!idle) {
          return;
        }
        idle = false;
        clearMessage();
        comeBack();
        if (type === "keydown") {
          event.preventDefault(); // this key wakes the page; it decides nothing
        }
      },
      { capture: true, passive: type !== "keydown" }
    );
  });
}
