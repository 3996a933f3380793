// Class search (label review): `/` opens it; fuzzy matching over every class name, loaded once.

import { root } from "./shared.js";

var box = document.getElementById("class-search");
var input = document.getElementById("class-search-input");
var list = document.getElementById("class-search-results");
var classes = null;
var loading = null;
var matches = [];
var selected = 0;
var SHOWN = 8;
var onPick = function () {}; // called with the id of the class picked

function load() {
  if (!loading) {
    loading = fetch(root.dataset.classesUrl, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        return response.json();
      })
      .then(function (data) {
        classes = data.classes.map(function (pair) {
          return { id: pair[0], name: pair[1], lower: pair[1].toLowerCase() };
        });
        return classes;
      });
  }
  return loading;
}

// Higher is better; -1: no match. Substrings beat scattered letters, word starts and
// early, short matches win ties.
function score(name, query) {
  var at = name.indexOf(query);
  if (at >= 0) {
    var wordStart = at === 0 || " _-/(.".indexOf(name.charAt(at - 1)) >= 0;
    return 1000 + (wordStart ? 200 : 0) - at - (name.length - query.length) * 0.5;
  }
  var position = -1;
  var first = -1;
  var gaps = 0;
  for (var i = 0; i < query.length; i += 1) {
    var found = name.indexOf(query.charAt(i), position + 1);
    if (found < 0) {
      return -1;
    }
    if (first < 0) {
      first = found;
    } else {
      gaps += found - position - 1;
    }
    position = found;
  }
  return 500 - gaps * 4 - first - name.length * 0.2;
}

function search(text) {
  var query = text.trim().toLowerCase();
  if (!classes || !query) {
    return [];
  }
  var best = [];
  for (var i = 0; i < classes.length; i += 1) {
    var s = score(classes[i].lower, query);
    if (s < 0 || (best.length === SHOWN && s <= best[SHOWN - 1].score)) {
      continue;
    }
    var entry = { score: s, item: classes[i] };
    var at = best.length;
    while (at > 0 && best[at - 1].score < s) {
      at -= 1;
    }
    best.splice(at, 0, entry);
    if (best.length > SHOWN) {
      best.pop();
    }
  }
  return best.map(function (entry) {
    return entry.item;
  });
}

function render() {
  matches = search(input.value);
  selected = Math.min(selected, Math.max(0, matches.length - 1));
  list.replaceChildren();
  matches.forEach(function (match, index) {
    var li = document.createElement("li");
    li.textContent = match.name;
    li.dataset.classId = String(match.id);
    if (index === selected) {
      li.className = "selected";
      li.setAttribute("aria-selected", "true");
    }
    list.appendChild(li);
  });
  if (!matches.length && input.value.trim()) {
    var none = document.createElement("li");
    none.className = "muted";
    none.textContent = classes ? "No class matches." : "Loading the classes…";
    list.appendChild(none);
  }
}

function open() {
  box.hidden = false;
  input.value = "";
  selected = 0;
  render();
  input.focus();
  load().then(render);
}

function close() {
  box.hidden = true;
  input.blur();
}

// ↑ ↓ move through the matches, Enter picks, Esc closes; other keys type.
function onInputKey(event) {
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    var step = event.key === "ArrowDown" ? 1 : -1;
    selected = Math.max(0, Math.min(matches.length - 1, selected + step));
    render();
  } else if (event.key === "Enter") {
    if (matches[selected]) {
      close();
      onPick(matches[selected].id);
    }
  } else if (event.key === "Escape") {
    close();
  } else {
    return;
  }
  event.preventDefault();
  event.stopPropagation();
}

function isOpen() {
  return !box.hidden;
}

// Sets up the search box of the label page; `pick(classId)`: what picking a class does.
export function ClassSearch(pick) {
  onPick = pick;
  input.addEventListener("input", function () {
    selected = 0;
    render();
  });
  input.addEventListener("keydown", onInputKey);
  list.addEventListener("mousedown", function (event) {
    var li = event.target instanceof Element ? event.target.closest("li[data-class-id]") : null;
    if (li) {
      event.preventDefault();
      close();
      onPick(Number(li.dataset.classId));
    }
  });
  window.setTimeout(load, 300);

  return { open: open, isOpen: isOpen };
}
