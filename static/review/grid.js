// Grid review (junk_check, junk_audit): a page of thumbnails; arrows move, Space or a click
// marks junk, Shift extends like the last one marked, Enter sends the page (unmarked: not junk).

import { fetchBatch, hold, letGo, onLost, remember } from "./leases.js";
import {
  affectedTasks,
  clearMessage,
  decideUrl,
  errorOf,
  newKey,
  notifyDecided,
  postWithRetry,
  prefetchBox,
  root,
  showEmpty,
  showMessage,
  stage,
  taskIds,
} from "./shared.js";

// The page on stage (null: none), its tiles, the cursor and the anchor that Shift extends from;
// `next`: the following page, leased while this one is looked at.
var pageSize = 48;
var page = null;
var tiles = [];
var cursor = 0;
var anchor = null;
var anchorJunk = true;
var pageKey = "";
var shownAt = 0;
var busy = false;
var next = null;

function mount(batch) {
  if (batch.parentNode !== stage) {
    stage.replaceChildren(batch);
  }
  if (batch.hasAttribute("data-empty")) {
    page = null;
    tiles = [];
    showEmpty();
    return;
  }
  page = batch;
  tiles = Array.prototype.slice.call(page.querySelectorAll(".tile"));
  remember(
    tiles.map(function (tile) {
      return Number(tile.dataset.taskId);
    })
  );
  cursor = 0;
  anchor = null;
  pageKey = newKey();
  shownAt = performance.now();
  setCursor(0);
  root.classList.remove("loading");
  next = fetchBatch(pageSize).catch(function () {
    return null;
  });
}

function columns() {
  var list = page.querySelector(".tiles");
  var template = window.getComputedStyle(list).gridTemplateColumns || "";
  return Math.max(1, template.split(" ").filter(Boolean).length);
}

function setCursor(index) {
  if (!tiles.length) {
    return;
  }
  index = Math.max(0, Math.min(tiles.length - 1, index));
  tiles[cursor].classList.remove("cursor");
  cursor = index;
  tiles[cursor].classList.add("cursor");
}

function isJunk(tile) {
  return tile.classList.contains("junk");
}

function setJunk(tile, junk) {
  tile.classList.toggle("junk", junk);
  tile.setAttribute("aria-pressed", junk ? "true" : "false");
}

function toggle(index) {
  setJunk(tiles[index], !isJunk(tiles[index]));
  anchor = index;
  anchorJunk = isJunk(tiles[index]);
}

// Gives every tile from the anchor (the last one toggled) to `index` the anchor's state.
function range(index) {
  if (anchor === null) {
    toggle(index);
    return;
  }
  var low = Math.min(anchor, index);
  var high = Math.max(anchor, index);
  for (var i = low; i <= high; i += 1) {
    setJunk(tiles[i], anchorJunk);
  }
}

function submit() {
  if (busy || !page) {
    return;
  }
  var live = tiles.filter(function (tile) {
    return !tile.classList.contains("gone");
  });
  if (!live.length) {
    page = null; // every image of it went to someone else: on to the next page
    advance();
    return;
  }
  busy = true;
  root.classList.add("busy");
  var seconds = (performance.now() - shownAt) / 1000 / Math.max(1, live.length);
  letGo(taskIds(live)); // decided from now on, unless sending fails
  var decisions = live.map(function (tile) {
    return {
      task_id: Number(tile.dataset.taskId),
      lease_version: Number(tile.dataset.leaseVersion),
      verdict: isJunk(tile) ? "junk" : "not_junk",
      seconds: Math.round(seconds * 1000) / 1000,
      idempotency_key: pageKey + "-" + tile.dataset.taskId,
    };
  });
  send(decisions, []);
}

function send(decisions, dropped) {
  postWithRetry(decideUrl, { decisions: decisions }, 3).then(
    function (result) {
      if (result.ok) {
        done();
        if (dropped.length) {
          showMessage(
            dropped.length + " image(s) of that page went to another annotator while you " +
              "were away; the rest were saved.",
            "warn"
          );
        } else {
          clearMessage();
        }
        notifyDecided(decisions.length);
        advance();
        return;
      }
      var error = errorOf(result);
      var gone = affectedTasks(error);
      if ((result.status === 409 || result.status === 403) && gone.length) {
        letGo(gone);
        // Those tasks are not ours to decide any more: drop them, send the rest again
        // with the same keys (anything already stored comes back as it was).
        tiles.forEach(function (tile) {
          if (gone.indexOf(Number(tile.dataset.taskId)) >= 0) {
            tile.classList.add("gone");
          }
        });
        var left = decisions.filter(function (d) {
          return gone.indexOf(d.task_id) < 0;
        });
        if (!left.length) {
          done();
          showMessage(error.message, "warn");
          advance();
          return;
        }
        send(left, dropped.concat(gone));
        return;
      }
      done();
      hold(undecided(decisions));
      showMessage(error.message, "bad");
    },
    function () {
      done();
      hold(undecided(decisions));
      showMessage(
        "Could not reach the server. Press Enter to send the page again: nothing is " +
          "recorded twice.",
        "bad"
      );
    }
  );
}

function done() {
  busy = false;
  root.classList.remove("busy");
}

function undecided(decisions) {
  return decisions.map(function (d) {
    return d.task_id;
  });
}

// Tasks that went to someone else while the page was away: greyed out, not sent.
function markGone(ids) {
  var gone = 0;
  [stage, prefetchBox].forEach(function (box) {
    ids.forEach(function (id) {
      var tile = box.querySelector('.tile[data-task-id="' + id + '"]');
      if (tile) {
        tile.classList.add("gone");
        gone += box === stage ? 1 : 0;
      }
    });
  });
  if (gone) {
    showMessage(gone + " image(s) of this page went to another annotator while you were away.", "warn");
  }
}

function advance() {
  var pending = next || fetchBatch(pageSize);
  next = null;
  root.classList.add("loading");
  pending
    .then(function (batch) {
      return batch || fetchBatch(pageSize);
    })
    .then(
      function (batch) {
        if (!batch) {
          showEmpty();
          return;
        }
        mount(batch);
      },
      function () {
        root.classList.remove("loading");
        showMessage("Could not load the next page; reload the page to go on.", "bad");
      }
    );
}

// The grid's keys; true when the key did something.
function onKey(event) {
  if (!page) {
    return false;
  }
  switch (event.key) {
    case "ArrowLeft":
      setCursor(cursor - 1);
      return true;
    case "ArrowRight":
      setCursor(cursor + 1);
      return true;
    case "ArrowUp":
      setCursor(cursor - columns());
      return true;
    case "ArrowDown":
      setCursor(cursor + columns());
      return true;
    case " ":
      if (event.shiftKey) {
        range(cursor);
      } else {
        toggle(cursor);
      }
      return true;
    case "Enter":
      submit();
      return true;
    default:
      return false;
  }
}

// Starts grid review on the page's stage; returns the controller the page's keys go to.
export function GridReview() {
  pageSize = Number(root.dataset.pageSize) || 48;
  stage.addEventListener("click", function (event) {
    var tile = event.target instanceof Element ? event.target.closest(".tile") : null;
    var index = tiles.indexOf(tile);
    if (index < 0) {
      return;
    }
    event.preventDefault();
    if (event.shiftKey) {
      range(index);
    } else {
      toggle(index);
    }
    setCursor(index);
  });

  var button = root.querySelector("[data-submit]");
  if (button) {
    button.addEventListener("click", submit);
  }

  onLost(markGone);
  advance();

  return { onKey: onKey };
}
