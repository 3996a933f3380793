// Thresher's review pages: grid review (junk), label review and class review, by keyboard.
// Loaded with `defer` on the review pages only. The page arrives without tasks (a GET leases
// nothing); the server renders every batch of tasks as HTML (POST <page>/next, with the CSRF
// token), the first one as soon as this script runs. It keeps the next batch out of sight
// until it is needed, so it appears at once, sends decisions to /api/review/decisions with the
// session's CSRF token and an idempotency key (a retry is recorded once), and measures the
// time spent. The leases are short: the page renews them while it is visible and someone is
// at it, and gives them back when it is hidden or closed.
(function () {
  "use strict";

  var root = document.getElementById("review");
  if (!root) {
    return;
  }

  var stage = document.getElementById("stage");
  var prefetchBox = document.getElementById("prefetch");
  var emptyBox = document.getElementById("queue-empty");
  var messageBox = document.getElementById("review-message");
  var decideUrl = root.dataset.decideUrl;
  var undoUrl = root.dataset.undoUrl;
  var nextUrl = root.dataset.nextUrl;
  var renewUrl = root.dataset.renewUrl;
  var releaseUrl = root.dataset.releaseUrl;
  var leaseSeconds = Number(root.dataset.leaseSeconds) || 60;
  //: Task ids this page was handed, newest last; sent as `exclude` so none comes back twice.
  var SEEN_LIMIT = 800;
  var seen = [];

  // --- plumbing --------------------------------------------------------------------------------

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function newKey() {
    var bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map
      .call(bytes, function (b) {
        return ("0" + b.toString(16)).slice(-2);
      })
      .join("");
  }

  function remember(ids) {
    ids.forEach(function (id) {
      if (seen.indexOf(id) < 0) {
        seen.push(id);
      }
    });
    if (seen.length > SEEN_LIMIT) {
      seen.splice(0, seen.length - SEEN_LIMIT);
    }
  }

  function taskIds(elements) {
    return elements.map(function (el) {
      return Number(el.dataset.taskId);
    });
  }

  function wait(ms) {
    return new Promise(function (resolve) {
      window.setTimeout(resolve, ms);
    });
  }

  function showMessage(text, tone) {
    messageBox.textContent = text;
    messageBox.className = "review-message " + (tone || "info");
    messageBox.hidden = false;
  }

  function clearMessage() {
    messageBox.hidden = true;
    messageBox.textContent = "";
  }

  function showEmpty() {
    stage.replaceChildren();
    emptyBox.hidden = false;
    root.classList.remove("loading");
  }

  // Counts today's decisions on the page at once; htmx refreshes the real figures soon after.
  function notifyDecided(count) {
    var today = document.querySelector("[data-today]");
    if (today && count > 0) {
      var value = parseInt(today.textContent.replace(/[^0-9]/g, ""), 10) || 0;
      today.textContent = (value + count).toLocaleString("en-US");
    }
    document.body.dispatchEvent(new CustomEvent("review:decided", { detail: { count: count } }));
  }

  function postJSON(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRF-Token": csrfToken(),
      },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response
        .json()
        .catch(function () {
          return null;
        })
        .then(function (data) {
          return { ok: response.ok, status: response.status, data: data };
        });
    });
  }

  // Network failures (not HTTP errors) are retried with the same body, so the same keys.
  function postWithRetry(url, body, attempts) {
    return postJSON(url, body).catch(function (error) {
      if (attempts <= 1) {
        throw error;
      }
      showMessage("Connection lost; trying again…", "warn");
      return wait(800).then(function () {
        return postWithRetry(url, body, attempts - 1);
      });
    });
  }

  function errorOf(result) {
    if (result.status === 401) {
      // The session ended: sign in again and come back here.
      window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
      return { code: "not_authenticated", message: "Your session ended; signing in again…" };
    }
    var error = result.data && result.data.error;
    return error || { code: "http_" + result.status, message: "The server answered " + result.status + "." };
  }

  function affectedTasks(error) {
    var details = error.details || {};
    if (details.task_ids) {
      return details.task_ids;
    }
    return details.task_id ? [details.task_id] : [];
  }

  // --- leases ----------------------------------------------------------------------------------
  // `held`: the tasks leased to this page and not decided. A heartbeat renews them while the
  // page is visible and someone used it in the last IDLE_MS; a beacon (it outlives the page)
  // gives them back when the page is hidden or closed, or nobody is there. A renewal takes
  // back what nobody else leased meanwhile; the rest is lost, and the page lets it go.

  var IDLE_MS = 5 * 60 * 1000;
  var held = {};
  var away = false; // the leases were given back; the next renewal takes them again
  var idle = false; // given back because nobody was there: the next key only wakes the page
  var lastInput = Date.now();
  var renewing = null;
  var lostHandler = function () {};

  function heldIds() {
    return Object.keys(held).map(Number);
  }

  function hold(ids) {
    ids.forEach(function (id) {
      held[id] = true;
    });
    if (away && ids.length) {
      sendRelease(ids); // leased while the page was hidden: not for now
    }
  }

  function letGo(ids) {
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

  // Leases the next `n` tasks; resolves to the batch element, parked in the hidden box so its
  // images load now.
  function fetchBatch(n) {
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

  function typingInto(target) {
    return target instanceof Element && (target.isContentEditable || target.closest("input, textarea, select") !== null);
  }

  // --- grid review (junk_check, junk_audit) ----------------------------------------------------

  function GridReview() {
    var pageSize = Number(root.dataset.pageSize) || 48;
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

    lostHandler = markGone;
    advance();

    return {
      onKey: function (event) {
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
      },
    };
  }

  // --- one item at a time (label_check, class_check) -------------------------------------------

  function ItemReview(keys) {
    var ahead = Number(root.dataset.ahead) || 2;
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
    lostHandler = function (ids) {
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
    };

    refill(); // the first batch
    show();

    return {
      current: current,
      decide: decide,
      onKey: function (event) {
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
      },
    };
  }

  // --- class search (label review) -------------------------------------------------------------

  function ClassSearch(onPick) {
    var box = document.getElementById("class-search");
    var input = document.getElementById("class-search-input");
    var list = document.getElementById("class-search-results");
    var classes = null;
    var loading = null;
    var matches = [];
    var selected = 0;
    var SHOWN = 8;

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

    input.addEventListener("input", function () {
      selected = 0;
      render();
    });
    input.addEventListener("keydown", function (event) {
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
    });
    list.addEventListener("mousedown", function (event) {
      var li = event.target instanceof Element ? event.target.closest("li[data-class-id]") : null;
      if (li) {
        event.preventDefault();
        close();
        onPick(Number(li.dataset.classId));
      }
    });
    window.setTimeout(load, 300);

    return { open: open, isOpen: function () { return !box.hidden; } };
  }

  // --- the page --------------------------------------------------------------------------------

  var controller;
  var search = null;
  var mode = root.dataset.mode;

  if (mode === "grid") {
    controller = GridReview();
  } else if (mode === "label") {
    var pick = function (item, classId) {
      if (!item) {
        return;
      }
      if (classId === Number(item.dataset.givenClassId)) {
        controller.decide("accept");
      } else {
        controller.decide("relabel", classId);
      }
    };
    var suggestion = function (key) {
      return function (item) {
        var li = item ? item.querySelector('.suggestions li[data-key="' + key + '"]') : null;
        if (li) {
          pick(item, Number(li.dataset.classId));
        }
      };
    };
    controller = ItemReview({
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
  } else if (mode === "class") {
    controller = ItemReview({
      k: function () { controller.decide("keep"); },
      d: function () { controller.decide("drop"); },
    });
  }

  document.addEventListener("keydown", function (event) {
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
  });
})();
