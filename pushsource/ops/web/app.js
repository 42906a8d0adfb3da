// The pushsource control page: polls /api/stations, renders each station, and
// sends actions with the token from localStorage as a Bearer header.
"use strict";

const POLL_MS = 1000;
const TOKEN_KEY = "pushsource.token";
const LOCKED_HINT = "Enter the control token at the top of the page first";

const stationsEl = document.getElementById("stations");
const noticeEl = document.getElementById("notice");
const tokenInput = document.getElementById("token");
const template = document.getElementById("station-template");

// Per station id: {el, clock: {elapsed, duration, at, running}, queueKey, historyKey}
const views = new Map();
let dragging = null; // {station, file} while a queue item is dragged

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

function clock(seconds) {
  if (seconds == null || !isFinite(seconds)) return "–:––";
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? h + ":" : "") + mm + ":" + String(r).padStart(2, "0");
}

function q(root, selector) {
  return root.querySelector(selector);
}

// --- talking to the server ------------------------------------------------------------

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers }, cache: "no-store" };
  if (token()) init.headers.Authorization = "Bearer " + token();
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const reason = data && data.error ? data.error : response.status + " " + response.statusText;
    throw new Error(reason);
  }
  return data;
}

function stationPath(id, rest = "") {
  return "/api/stations/" + encodeURIComponent(id) + rest;
}

async function act(id, rest, body) {
  const view = views.get(id);
  q(view.el, ".message").textContent = "";
  try {
    render(await api("POST", stationPath(id, rest), body));
  } catch (error) {
    q(view.el, ".message").textContent = error.message;
  }
}

async function poll() {
  try {
    const data = await api("GET", "/api/stations");
    noticeEl.textContent = "";
    const seen = new Set();
    for (const status of data.stations) {
      render(status);
      seen.add(status.id);
    }
    for (const [id, view] of views) {
      if (!seen.has(id)) {
        view.el.remove();
        views.delete(id);
      }
    }
  } catch (error) {
    noticeEl.textContent = "Cannot reach pushsource: " + error.message;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// --- rendering --------------------------------------------------------------------------

function viewFor(id) {
  let view = views.get(id);
  if (view) return view;
  const el = template.content.firstElementChild.cloneNode(true);
  el.dataset.station = id;
  el.id = "station-" + id;
  view = { el, clock: null, queueKey: null, historyKey: null };
  views.set(id, view);
  wire(view, id);
  stationsEl.append(el);
  applyLock();
  return view;
}

function render(status) {
  const view = viewFor(status.id);
  const el = view.el;
  const conn = status.connection || {};
  el.dataset.state = conn.state || "";
  q(el, ".name").textContent = status.name || status.id;
  const listen = q(el, ".listen");
  listen.href = status.listen_url || "#";
  listen.setAttribute("aria-label", "listen to " + (status.name || status.id));
  q(el, ".state").textContent = conn.state || "unknown";
  q(el, ".reconnects").textContent =
    conn.reconnects ? "· " + conn.reconnects + " reconnect" + (conn.reconnects === 1 ? "" : "s") : "";
  q(el, ".conn-error").textContent = conn.error ? "· " + conn.error : "";

  const now = status.now_playing;
  q(el, ".now-title").textContent = now ? now.title || now.file : "Nothing playing";
  q(el, ".now-title").dataset.file = now ? now.file : "";
  view.clock = now
    ? {
        elapsed: Number(now.elapsed) || 0,
        duration: now.duration == null ? null : Number(now.duration),
        at: performance.now(),
        running: conn.state === "on air",
      }
    : null;
  tick(view);

  renderQueue(view, status.queue || []);
  renderHistory(view, status.history || []);
}

function renderQueue(view, queue) {
  const key = JSON.stringify(queue.map((item) => item.file));
  if (key === view.queueKey || (dragging && dragging.station === view.el.dataset.station)) return;
  view.queueKey = key;
  const list = q(view.el, ".queue");
  const items = queue.map((item) => {
    const li = document.createElement("li");
    li.dataset.file = item.file;
    const name = document.createElement("span");
    name.className = "file";
    name.textContent = item.file;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", "Remove " + item.file + " from the queue");
    li.append(name, remove);
    return li;
  });
  list.replaceChildren(...items);
  q(view.el, ".queue-count").textContent = queue.length ? "(" + queue.length + ")" : "";
  q(view.el, ".queue-empty").hidden = queue.length > 0;
  applyLock();
}

function renderHistory(view, history) {
  const key = JSON.stringify(history);
  if (key === view.historyKey) return;
  view.historyKey = key;
  const items = history.map((item) => {
    const li = document.createElement("li");
    li.dataset.file = item.file;
    const title = document.createElement("span");
    title.className = "file";
    title.textContent = item.title || item.file;
    title.title = item.file;
    li.append(title);
    if (item.started) {
      const time = document.createElement("time");
      time.dateTime = item.started;
      const when = new Date(item.started);
      time.textContent = isNaN(when) ? item.started : when.toLocaleTimeString();
      li.append(time);
    }
    const again = document.createElement("button");
    again.type = "button";
    again.className = "requeue";
    again.textContent = "Queue again";
    again.setAttribute("aria-label", "Queue " + item.file + " again");
    li.append(" ", again);
    return li;
  });
  q(view.el, ".history").replaceChildren(...items);
  q(view.el, ".history-empty").hidden = history.length > 0;
  applyLock();
}

// The progress bar moves between polls on the page's own clock.
function tick(view) {
  const c = view.clock;
  let elapsed = null, duration = null;
  if (c) {
    elapsed = c.elapsed + (c.running ? (performance.now() - c.at) / 1000 : 0);
    duration = c.duration;
    if (duration != null) elapsed = Math.min(elapsed, duration);
  }
  const percent = elapsed != null && duration ? (100 * elapsed) / duration : 0;
  q(view.el, ".progress-fill").style.width = percent.toFixed(2) + "%";
  q(view.el, ".progress").setAttribute("aria-valuenow", String(Math.round(percent)));
  q(view.el, ".elapsed").textContent = clock(elapsed);
  q(view.el, ".duration").textContent = clock(duration);
}

function animate() {
  for (const view of views.values()) tick(view);
  requestAnimationFrame(animate);
}

// Without a token every action button is off, and says why.
function applyLock() {
  const locked = !token();
  for (const view of views.values()) {
    view.el.classList.toggle("locked", locked);
    for (const button of view.el.querySelectorAll(".skip, .remove, .requeue")) {
      button.disabled = locked;
      button.title = locked ? LOCKED_HINT : "";
    }
    const input = q(view.el, ".file-input");
    input.disabled = locked;
    input.title = locked ? LOCKED_HINT : "";
    for (const li of view.el.querySelectorAll(".queue li")) {
      li.draggable = !locked;
    }
  }
}

// --- actions ----------------------------------------------------------------------------

function wire(view, id) {
  const el = view.el;
  q(el, ".skip").addEventListener("click", () => act(id, "/skip"));
  q(el, ".queue").addEventListener("click", (event) => {
    const button = event.target.closest(".remove");
    if (button) act(id, "/queue/remove", { file: button.closest("li").dataset.file });
  });
  q(el, ".history").addEventListener("click", (event) => {
    const button = event.target.closest(".requeue");
    if (button) act(id, "/queue", { file: button.closest("li").dataset.file });
  });
  wireDrag(view, id);
  wireUpload(view, id);
}

function clearMarks(list) {
  for (const li of list.querySelectorAll("li")) li.classList.remove("drop-before", "drop-after");
}

function wireDrag(view, id) {
  const list = q(view.el, ".queue");
  list.addEventListener("dragstart", (event) => {
    const li = event.target.closest("li[data-file]");
    if (!li || !token()) return;
    dragging = { station: id, file: li.dataset.file };
    li.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", li.dataset.file);
  });
  list.addEventListener("dragover", (event) => {
    if (!dragging || dragging.station !== id) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "move";
    clearMarks(list);
    const li = event.target.closest("li[data-file]");
    if (li && li.dataset.file !== dragging.file) {
      const box = li.getBoundingClientRect();
      li.classList.add(event.clientY > box.top + box.height / 2 ? "drop-after" : "drop-before");
    }
  });
  list.addEventListener("drop", (event) => {
    if (!dragging || dragging.station !== id) return;
    event.preventDefault();
    const file = dragging.file;
    // The new position counts the queue without the dragged file, as the API does.
    const others = [...list.querySelectorAll("li[data-file]")].filter((li) => li.dataset.file !== file);
    const target = event.target.closest("li[data-file]");
    let index = others.length;
    if (target && target.dataset.file !== file) {
      const box = target.getBoundingClientRect();
      index = others.indexOf(target) + (event.clientY > box.top + box.height / 2 ? 1 : 0);
    } else if (target) {
      return; // dropped on itself
    }
    endDrag(list);
    act(id, "/queue/move", { file, index });
  });
  list.addEventListener("dragend", () => endDrag(list));
}

function endDrag(list) {
  clearMarks(list);
  for (const li of list.querySelectorAll(".dragging")) li.classList.remove("dragging");
  const was = dragging;
  dragging = null;
  if (was) views.get(was.station).queueKey = null; // render what the server says next
}

function wireUpload(view, id) {
  const zone = q(view.el, ".dropzone");
  const input = q(view.el, ".file-input");
  const isFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
  zone.addEventListener("dragover", (event) => {
    if (!isFiles(event)) return;
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    if (!isFiles(event)) return;
    event.preventDefault();
    zone.classList.remove("over");
    uploadAll(view, id, [...event.dataTransfer.files]);
  });
  input.addEventListener("change", () => {
    uploadAll(view, id, [...input.files]);
    input.value = "";
  });
}

async function uploadAll(view, id, files) {
  const status = q(view.el, ".upload-status");
  if (!token()) {
    status.textContent = LOCKED_HINT + " to upload.";
    return;
  }
  for (const file of files) {
    try {
      const saved = await upload(id, file, (percent) => {
        status.textContent = "Uploading " + file.name + ": " + percent + "%";
      });
      status.textContent = "Uploaded " + saved.file;
    } catch (error) {
      status.textContent = "Upload of " + file.name + " failed: " + error.message;
    }
  }
}

// XMLHttpRequest rather than fetch: it reports upload progress.
function upload(id, file, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", stationPath(id, "/files/" + encodeURIComponent(file.name)));
    xhr.setRequestHeader("Authorization", "Bearer " + token());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) progress(Math.floor((100 * event.loaded) / event.total));
    };
    xhr.onload = () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch (_) {
        data = null;
      }
      if (xhr.status >= 200 && xhr.status < 300 && data) resolve(data);
      else reject(new Error(data && data.error ? data.error : "HTTP " + xhr.status));
    };
    xhr.onerror = () => reject(new Error("the connection failed"));
    xhr.send(file);
  });
}

// --- start ------------------------------------------------------------------------------

tokenInput.value = token();
document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = tokenInput.value.trim();
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
  applyLock();
});
document.getElementById("token-forget").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  tokenInput.value = "";
  applyLock();
});
// A file dropped outside a drop zone must not make the browser leave the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

poll();
requestAnimationFrame(animate);
