// What every review page shares: its elements and URLs, messages, and talking to the server
// (JSON with the session's CSRF token, retries, the app's error shape).

export const root = document.getElementById("review");
export const stage = document.getElementById("stage");
export const prefetchBox = document.getElementById("prefetch");
export const emptyBox = document.getElementById("queue-empty");
const messageBox = document.getElementById("review-message");
const data = root ? root.dataset : {};
export const decideUrl = data.decideUrl;
export const undoUrl = data.undoUrl;
export const nextUrl = data.nextUrl;
export const renewUrl = data.renewUrl;
export const releaseUrl = data.releaseUrl;
export const leaseSeconds = Number(data.leaseSeconds) || 60;

export function csrfToken() {
  var meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export function newKey() {
  var bytes = new Uint8Array(12);
  window.crypto.getRandomValues(bytes);
  return Array.prototype.map
    .call(bytes, function (b) {
      return ("0" + b.toString(16)).slice(-2);
    })
    .join("");
}

export function taskIds(elements) {
  return elements.map(function (el) {
    return Number(el.dataset.taskId);
  });
}

export function wait(ms) {
  return new Promise(function (resolve) {
    window.setTimeout(resolve, ms);
  });
}

export function showMessage(text, tone) {
  messageBox.textContent = text;
  messageBox.className = "review-message " + (tone || "info");
  messageBox.hidden = false;
}

export function clearMessage() {
  messageBox.hidden = true;
  messageBox.textContent = "";
}

export function showEmpty() {
  stage.replaceChildren();
  emptyBox.hidden = false;
  root.classList.remove("loading");
}

// Counts today's decisions on the page at once; htmx refreshes the real figures soon after.
export function notifyDecided(count) {
  var today = document.querySelector("[data-today]");
  if (today && count > 0) {
    var value = parseInt(today.textContent.replace(/[^0-9]/g, ""), 10) || 0;
    today.textContent = (value + count).toLocaleString("en-US");
  }
  document.body.dispatchEvent(new CustomEvent("review:decided", { detail: { count: count } }));
}

export function postJSON(url, body) {
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
export function postWithRetry(url, body, attempts) {
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

export function errorOf(result) {
  if (result.status === 401) {
    // The session ended: sign in again and come back here.
    window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
    return { code: "not_authenticated", message: "Your session ended; signing in again…" };
  }
  var error = result.data && result.data.error;
  return error || { code: "http_" + result.status, message: "The server answered " + result.status + "." };
}

export function affectedTasks(error) {
  var details = error.details || {};
  if (details.task_ids) {
    return details.task_ids;
  }
  return details.task_id ? [details.task_id] : [];
}
