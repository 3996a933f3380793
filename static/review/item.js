// One item at a time (label_check, class_check): the page's keys decide the item shown, the next
// ones wait out of sight; decisions go out one after another, Backspace undoes the last.

import { fetchBatch, hold, letGo, onLost, remember } from "./leases.js";
import {
  clearMessage,
  decideUrl,
  emptyBox,
  errorOf,
  newKey,
  notifyDecided,
  postWithRetry,
  prefetchBox,
  root,
  showEmpty,
  showMessage,
  stage,
  undoUrl,
} from "./shared.js";

var keys = {}; // key → what it does to the item shown
var ahead = 2;
var queue = []; // item elements; queue[0] is the one on stage
var history = []; // decisions that Backspace can undo, newest last
var chain = Promise.resolve(); // decisions and undos go out one after the other
var loading = null;
var drainedAt = 0;
var shownAt = 0;

function current() {
  return queue.length ? queue[0] : null;
}

function take(batch) {
  if (!batch) {
    return 0;
  }
  var items = Array.prototype.slice.call(batch.querySelectorAll(".item"));
  remember(
    items.map(function (item) {
      return Number(item.dataset.taskId);
    })
  );
  items.forEach(function (item) {
    prefetchBox.appendChild(item);
    queue.push(item);
  });
  batch.remove();
  return items.length;
}

function show() {
  var item = current();
  if (!item) {
    if (loading) {
      stage.replaceChildren();
      root.classList.add("loading");
    } else {
      showEmpty();
    }
    return;
  }
  if (item.parentNode !== stage || stage.children.length !== 1) {
    stage.replaceChildren(item);
  }
  emptyBox.hidden = true;
  root.classList.remove("loading");
  shownAt = performance.now();
}

function refill() {
  if (loading || queue.length > ahead || Date.now() - drainedAt < 15000) {
    return;
  }
  loading = fetchBatch(ahead + 1 - queue.length).then(
    function (batch) {
      loading = null;
      if (!take(batch)) {
        drainedAt = Date.now();
      }
      if (!stage.querySelector(".item")) {
        show();
      }
    },
    function () {
      loading = null;
      drainedAt = Date.now();
      if (!current()) {
        showEmpty();
      }
      showMessage("Could not load more tasks; reload the page to go on.", "bad");
    }
  );
}

function decide(verdict, classId) {
  var item = current();
  if (!item) {
    return;
  }
  var decision = {
    task_id: Number(item.dataset.taskId),
    lease_version: Number(item.dataset.leaseVersion),
    verdict: verdict,
    seconds: Math.round((performance.now() - shownAt)) / 1000,
    idempotency_key: newKey(),
  };
  if (classId) {
    decision.class_id = classId;
  }
  var entry = { item: item, decisionId: null };
  history.push(entry);
  if (history.length > 50) {
    history.shift();
  }
  queue.shift();
  letGo([decision.task_id]);
  prefetchBox.appendChild(item);
  clearMessage();
  show();
  refill();
  entry.promise = chain = chain.then(function () {
    return postWithRetry(decideUrl, { decisions: [decision] }, 3).then(
      function (result) {
        if (result.ok) {
          entry.decisionId = result.data.decisions[0].id;
          notifyDecided(1);
          return entry.decisionId;
        }
        forget(entry);
        showMessage(errorOf(result).message, result.status === 409 ? "warn" : "bad");
        return null;
      },
      function () {
        forget(entry);
        queue.unshift(item);
        hold([decision.task_id]);
        show();
        showMessage("Could not reach the server; decide this one again.", "bad");
        return null;
      }
    );
  });
}

function forget(entry) {
  var index = history.indexOf(entry);
  if (index >= 0) {
    history.splice(index, 1);
  }
}

function undo() {
  var entry = history.pop();
  if (!entry) {
    showMessage("Nothing to undo.", "info");
    return;
  }
  chain = chain
    .then(function () {
      return entry.promise;
    })
    .then(function (decisionId) {
      if (!decisionId) {
        return null;
      }
      var body = { decision_id: decisionId, idempotency_key: newKey() };
      return postWithRetry(undoUrl, body, 3).then(function (result) {
        if (!result.ok) {
          showMessage(errorOf(result).message, "bad");
          return null;
        }
        entry.item.dataset.leaseVersion = String(result.data.task.lease_version);
        hold([result.data.task.id]);
        queue.unshift(entry.item);
        show();
        showMessage("Undone: decide this one again.", "info");
        document.body.dispatchEvent(new CustomEvent("review:decided", { detail: { count: 0 } }));
        return null;
      });
    })
    .catch(function () {
      showMessage("Could not reach the server to undo; press Backspace to try again.", "bad");
      history.push(entry);
    });
}

// Tasks that went to someone else while the page was away leave the queue.
function dropLost(ids) {
  var before = queue.length;
  var wasShown = current();
  queue = queue.filter(function (item) {
    return ids.indexOf(Number(item.dataset.taskId)) < 0;
  });
  if (queue.length === before) {
    return;
  }
  refill();
  if (current() !== wasShown) {
    show();
    showMessage("That one went to another annotator while you were away.", "warn");
  }
}

// The page's keys; true when the key did something.
function onKey(event) {
  if (event.key === "Backspace") {
    undo();
    return true;
  }
  var action = keys[event.key.toLowerCase()];
  if (!action) {
    return false;
  }
  action(current());
  return true;
}

// Starts one-at-a-time review on the page's stage: `pageKeys` maps a key (lower case) to what it
// does to the item shown. Returns the controller the page's keys go to.
export function ItemReview(pageKeys) {
  keys = pageKeys;
  ahead = Number(root.dataset.ahead) || 2;
  onLost(dropLost);
  refill(); // the first batch
  show();

  return { current: current, decide: decide, onKey: onKey };
}
