// The annotator's review pages: grid review (junk), label review and class review, by keyboard.
// An ES module, loaded on the review pages only; the parts live in static/review/ (shared.js:
// elements, messages and requests; leases.js; grid.js; item.js; class-search.js).
//
// The page arrives without tasks (a GET leases nothing); the server renders every batch of tasks
// as HTML (POST <page>/next, with the CSRF token), the first one as soon as this script runs. It
// keeps the next batch out of sight until it is needed, so it appears at once, sends decisions to
// /api/review/decisions with the session's CSRF token and an idempotency key (a retry is recorded
// once), and measures the time spent. The leases are short: the page renews them while it is
// visible and someone is at it, and gives them back when it is hidden or closed.

import { typingInto } from "./keys.js";
import { ClassSearch } from "./review/class-search.js";
import { GridReview } from "./review/grid.js";
import { ItemReview } from "./review/item.js";
import { watchLeases } from "./review/leases.js";
import { root, stage } from "./review/shared.js";

var controller = null; // the page's review: GridReview or ItemReview
var search = null; // the class search, on the label page

if (root) {
  watchLeases();
  controller = start(root.dataset.mode);
  document.addEventListener("keydown", onKey);
}

function start(mode) {
  if (mode === "grid") {
    return GridReview();
  }
  if (mode === "label") {
    return labelReview();
  }
  if (mode === "class") {
    return ItemReview({
      k: function () { controller.decide("keep"); },
      d: function () { controller.decide("drop"); },
    });
  }
  return null;
}

// Label review: A accepts the given label, 1–5 pick a suggestion, J junk, U unsure, `/` searches
// every class; a click on a suggestion picks it, on the given class accepts it.
function labelReview() {
  var review = ItemReview({
    a: function () { controller.decide("accept"); },
    j: function () { controller.decide("junk"); },
    u: function () { controller.decide("unsure"); },
    1: suggestion("1"),
    2: suggestion("2"),
    3: suggestion("3"),
    4: suggestion("4"),
    5: suggestion("5"),
    "/": function (item) {
      if (item) {
        search.open();
      }
    },
  });
  search = ClassSearch(function (classId) {
    pick(controller.current(), classId);
  });
  stage.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    var li = target ? target.closest(".suggestions li[data-class-id]") : null;
    if (li) {
      pick(controller.current(), Number(li.dataset.classId));
    } else if (target && target.closest(".given")) {
      controller.decide("accept");
    }
  });
  return review;
}

function pick(item, classId) {
  if (!item) {
    return;
  }
  if (classId === Number(item.dataset.givenClassId)) {
    controller.decide("accept");
  } else {
    controller.decide("relabel", classId);
  }
}

function suggestion(key) {
  return function (item) {
    var li = item ? item.querySelector('.suggestions li[data-key="' + key + '"]') : null;
    if (li) {
      pick(item, Number(li.dataset.classId));
    }
  };
}

// The review's keys, unless a modifier is held, a text field or the class search has the key,
// or the keyboard help is open.
function onKey(event) {
  if (!controller || event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  if (typingInto(event.target) || (search && search.isOpen())) {
    return;
  }
  var help = document.getElementById("keys-help");
  if (help && !help.hidden) {
    return;
  }
  if (controller.onKey(event)) {
    event.preventDefault();
  }
}
