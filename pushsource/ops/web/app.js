// The pushsource control page. Two views on one page:
// - the overview (#/): a compact row per station, filtered and sorted, updated
//   in place from one GET /api/stations?summary=1 per poll;
// - a station (#/station/ID): now playing, queue, history, files that could
//   not be played, share links and upload, from one GET /api/stations/ID per poll.
// The first paint uses the status the server put into the page. Actions send
// the token from localStorage as a Bearer header.
"use strict";

const POLL_MS = 1000;
const TOKEN_KEY = "pushsource.token";
const LOCKED_HINT = "Enter the control token at the top of the page first";
// Connection states that are trouble: the row says why, how long, how many attempts.
const PROBLEMS = new Set(["failed", "reconnecting", "stopped"]);

const $ = (selector, root = document) => root.querySelector(selector);
const rowsEl = $("#rows");
const noticeEl = $("#notice");
const tokenInput = $("#token");
const stationEl = $("#station");
const filterInput = $("#filter");
const stateFilter = $("#state-filter");

const rows = new Map(); // id -> {el, cells, status, clock}
let statuses = []; // the overview's last statuses, in the server's order
let sortKey = "state"; // by trouble: the problems on top, with no click
let sortDir = 1;
let orderKey = "";
let detail = null; // the station view: {id, status, clock, queueKey, historyKey, unplayableKey}
let dragging = null; // {file} while a queue item is dragged
let focusFile = null; // queue item to focus after the next render (keyboard moves)
let pollTimer = null;
let pollGeneration = 0;

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

// A file name that is not UTF-8 comes as lone surrogates ("\udcff" in the JSON):
// shown as the log shows it; dataset.file keeps the name itself for actions.
function escaped(text) {
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g,
    (c) => "\\u" + c.charCodeAt(0).toString(16));
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

// "MP3 128 kbps 44.1 kHz stereo"; short: "128k 44.1 kHz stereo" (a table cell).
function formatOf(status, short = false) {
  const f = status.format;
  if (!f) return "";
  const rate = f.samplerate ? (f.samplerate / 1000).toLocaleString("en", { maximumFractionDigits: 2 }) + " kHz" : "";
  const channels = f.channels === 1 ? "mono" : f.channels === 2 ? "stereo" : "";
  const bitrate = f.bitrate ? f.bitrate + (short ? "k" : " kbps") : "";
  return [short ? "" : "MP3", bitrate, rate, channels].filter(Boolean).join(" ");
}

// An output's format: "64 kbps · 22.05 kHz · mono".
function outputFormatOf(f) {
  if (!f) return "";
  const rate = f.samplerate ? (f.samplerate / 1000).toLocaleString("en", { maximumFractionDigits: 2 }) + " kHz" : "";
  const channels = f.channels === 1 ? "mono" : f.channels === 2 ? "stereo" : "";
  return [f.bitrate ? f.bitrate + " kbps" : "", rate, channels].filter(Boolean).join(" · ");
}

function outputsOf(status) {
  return Array.isArray(status.outputs) ? status.outputs : [];
}

function stateOf(status) {
  return (status.connection && status.connection.state) || "unknown";
}

// With several outputs, the station's listeners are those of every output
// whose count is known.
function listenersOf(status) {
  const outputs = outputsOf(status);
  if (outputs.length > 1) {
    const known = outputs.map((o) => o.listeners).filter((n) => typeof n === "number");
    if (known.length) return known.reduce((a, b) => a + b, 0);
  }
  return typeof status.listeners === "number" ? status.listeners : null;
}

function makeClock(status) {
  const now = status.now_playing;
  if (!now) return null;
  return {
    elapsed: Number(now.elapsed) || 0,
    duration: now.duration == null ? null : Number(now.duration),
    at: performance.now(),
    running: stateOf(status) === "on air",
  };
}

function elapsedOf(c) {
  if (!c) return null;
  let elapsed = c.elapsed + (c.running ? (performance.now() - c.at) / 1000 : 0);
  if (c.duration != null) elapsed = Math.min(elapsed, c.duration);
  return elapsed;
}

// --- talking to the server ------------------------------------------------------------

async function api(method, path, body) {
  const init = { method, headers: {}, cache: "no-store" };
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
    throw new Error(data && data.error ? data.error : response.status + " " + response.statusText);
  }
  return data;
}

function stationPath(id, rest = "") {
  return "/api/stations/" + encodeURIComponent(id) + rest;
}

function schedule(delay = POLL_MS) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, delay);
}

async function poll() {
  const generation = ++pollGeneration;
  const id = detail ? detail.id : null;
  try {
    if (id) {
      const status = await api("GET", stationPath(id));
      if (generation === pollGeneration && detail && detail.id === id) renderDetail(status);
    } else {
      const data = await api("GET", "/api/stations?summary=1");
      if (generation === pollGeneration) renderOverview(data.stations);
    }
    setText(noticeEl, "");
  } catch (error) {
    if (generation === pollGeneration) setText(noticeEl, "Cannot reach pushsource: " + error.message);
  } finally {
    if (generation === pollGeneration) schedule();
  }
}

// --- the overview -----------------------------------------------------------------------

function newRow(id) {
  const el = document.createElement("tr");
  el.dataset.row = id;
  const cells = {};
  for (const name of ["name", "state", "title", "time", "listeners", "format", "reconnects", "live"]) {
    const td = document.createElement(name === "name" ? "th" : "td");
    if (name === "name") td.scope = "row";
    td.className = "cell-" + name + (["time", "listeners", "format", "reconnects", "live"].includes(name) ? " col-" + name : "");
    el.append(td);
    cells[name] = td;
  }
  const link = document.createElement("a");
  link.href = "#/station/" + encodeURIComponent(id);
  cells.name.append(link);
  cells.link = link;
  const badge = document.createElement("span");
  badge.className = "badge";
  cells.state.append(badge);
  cells.badge = badge;
  addSparkCell(el, cells);
  return { el, cells, status: null, clock: null };
}

function renderRow(row, status) {
  const c = row.cells;
  const state = stateOf(status);
  const conn = status.connection || {};
  row.status = status;
  row.clock = makeClock(status);
  setText(c.link, status.name || status.id);
  if (row.el.dataset.state !== state) row.el.dataset.state = state;
  const condition = conditionOf(status); // dead air is trouble too: the row says so
  if (row.el.dataset.condition !== condition) row.el.dataset.condition = condition;
  setText(c.badge, state);
  c.badge.title = conn.error || "";
  const now = status.now_playing;
  const dead = deadAirText(status);
  const down = PROBLEMS.has(state) ? downText(conn, true) : "";
  const trouble = PROBLEMS.has(state) && (conn.error || down) ? "⚠ " + [conn.error, down].filter(Boolean).join(" · ") : "";
  const title = trouble || (now ? escaped(now.title || now.file) : "—");
  setText(c.title, dead ? "⚠ " + dead + " · " + title : title);
  c.title.title = trouble || (now ? escaped(now.file) : "");
  const listeners = listenersOf(status);
  setText(c.listeners, listeners == null ? "–" : String(listeners));
  setText(c.format, formatOf(status, true));
  // While down: the attempts that failed in this outage, beside the outages.
  const failed = PROBLEMS.has(state) && conn.attempts ? " · " + conn.attempts + " failed" : "";
  setText(c.reconnects, String(conn.reconnects || 0) + failed);
  // A DJ on the harbor, by name; nothing otherwise (the folder is not "live").
  const dj = status.live && status.live.user;
  setText(c.live, dj ? "● " + dj : "—");
  tickRow(row);
}

// Dead air: the silence alarm went off for the run of silence going out now.
function deadAirText(status) {
  const s = status.silence;
  return s && s.alarm ? "dead air: " + Math.round(s.seconds) + " s of silence going out" : "";
}

function tickRow(row) {
  const c = row.clock;
  const text = c ? clock(elapsedOf(c)) + " / " + clock(c.duration) : "";
  setText(row.cells.time, text);
}

function matches(status, text, state) {
  const s = stateOf(status);
  const condition = conditionOf(status);
  if (state === "problem" ? !NEEDS_LOOK.has(condition) : state && condition !== state) return false;
  if (!text) return true;
  const now = status.now_playing || {};
  const hay = [status.id, status.name, s, now.title, now.file, status.mount].join(" ").toLowerCase();
  return hay.includes(text);
}

function sortValue(row) {
  const s = row.status;
  switch (sortKey) {
    case "state": return troubleRank(s);
    case "title": return ((s.now_playing && (s.now_playing.title || s.now_playing.file)) || "").toLowerCase();
    case "elapsed": return elapsedOf(row.clock) ?? -1;
    case "listeners": return listenersOf(s) ?? -1;
    case "format": return formatOf(s);
    case "reconnects": return (s.connection && s.connection.reconnects) || 0;
    case "live": return (s.live && s.live.user) || "";
    default: return (s.name || s.id).toLowerCase();
  }
}

function renderOverview(list) {
  statuses = list;
  const seen = new Set();
  for (const status of list) {
    let row = rows.get(status.id);
    if (!row) {
      row = newRow(status.id);
      rows.set(status.id, row);
    }
    renderRow(row, status);
    seen.add(status.id);
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.el.remove();
      rows.delete(id);
    }
  }
  arrange();
  summarize();
}

// Filter and sort; the DOM is only reordered when the order changes.
function arrange() {
  const text = filterInput.value.trim().toLowerCase();
  const state = stateFilter.value;
  const shown = [];
  for (const row of rows.values()) {
    const visible = matches(row.status, text, state);
    if (row.el.hidden === visible) row.el.hidden = !visible;
    shown.push(row);
  }
  shown.sort((a, b) => {
    const x = sortValue(a), y = sortValue(b);
    if (x < y) return -sortDir;
    if (x > y) return sortDir;
    const an = (a.status.name || a.status.id).toLowerCase(), bn = (b.status.name || b.status.id).toLowerCase();
    if (an !== bn) return an < bn ? -1 : 1; // equals (the same trouble): by name
    return a.status.id < b.status.id ? -1 : 1;
  });
  const key = shown.map((r) => r.status.id).join("\n");
  if (key !== orderKey) {
    orderKey = key;
    rowsEl.replaceChildren(...shown.map((r) => r.el));
  }
  const visible = shown.filter((r) => !r.el.hidden).length;
  setText($("#shown-count"), visible === shown.length ? shown.length + " stations" : visible + " of " + shown.length + " stations");
  $("#no-match").hidden = visible > 0 || shown.length === 0;
}

function summarize() {
  renderSummary(); // problems first (below)
}

function wireOverview() {
  filterInput.addEventListener("input", arrange);
  stateFilter.addEventListener("change", () => {
    arrange();
    renderSummary();
  });
  $("#summary").addEventListener("click", (event) => {
    const b = event.target.closest("button[data-filter]");
    if (b) filterBy(b.dataset.filter);
  });
  for (const th of document.querySelectorAll("#stations-table th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      sortDir = key === sortKey ? -sortDir : ["name", "title", "format", "state"].includes(key) ? 1 : -1;
      sortKey = key;
      for (const other of document.querySelectorAll("#stations-table th[data-sort]")) other.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      arrange();
    });
  }
}

// --- problems first (issue 23) ------------------------------------------------------------
// Each station in one condition, worst first: its connection's trouble, then
// dead air, then a DJ live; the overview sorts by it, the summary counts it.
const TROUBLE = ["failed", "reconnecting", "stopped", "silent", "connecting", "live", "idle", "on air"];
const NEEDS_LOOK = new Set(["failed", "reconnecting", "stopped", "silent"]);
const CONDITION_LABEL = { silent: "silent (dead air)" };

function conditionOf(status) {
  const state = stateOf(status);
  if (state === "failed" || state === "reconnecting" || state === "stopped") return state;
  if (status.silence && status.silence.alarm) return "silent";
  if (state === "connecting" || state === "starting") return "connecting";
  if (status.live && status.live.user) return "live";
  return state;
}

function troubleRank(status) {
  const at = TROUBLE.indexOf(conditionOf(status));
  return at < 0 ? TROUBLE.length : at;
}

// "45 s", "12 min", "3 h 05 min" (no-break spaces: it wraps as one).
function spanOf(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  if (s < 60) return s + "\u00a0s";
  if (s < 3600) return Math.floor(s / 60) + "\u00a0min";
  return Math.floor(s / 3600) + "\u00a0h\u00a0" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "\u00a0min";
}

// A wall-clock time from the API: the time of day, with the date if not today.
function whenOf(iso) {
  const at = new Date(iso);
  if (isNaN(at)) return iso;
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return at.toDateString() === new Date().toDateString() ? time : at.toLocaleDateString() + " " + time;
}

// "down since 03:21 (12 min) · 5 failed attempts": since when, how long, how hard it tried.
function downText(conn, attempts = false) {
  if (!conn.down_since) return "";
  let text = "down since " + whenOf(conn.down_since) + " (" + spanOf(conn.down_for) + ")";
  if (attempts && conn.attempts) text += " · " + conn.attempts + " failed attempt" + (conn.attempts === 1 ? "" : "s");
  return text;
}

// The counts are filters: one click shows only those stations, a second all.
function renderSummary() {
  const counts = new Map();
  let look = 0;
  for (const status of statuses) {
    const condition = conditionOf(status);
    counts.set(condition, (counts.get(condition) || 0) + 1);
    if (NEEDS_LOOK.has(condition)) look++;
  }
  const chosen = stateFilter.value;
  const el = $("#summary");
  const key = JSON.stringify([statuses.length, [...counts], chosen]);
  if (el.dataset.key !== key) {
    el.dataset.key = key;
    const parts = [];
    if (look) parts.push(countButton("problem", look + (look === 1 ? " needs" : " need") + " a look", chosen, "look"));
    const order = [...counts.keys()].sort((a, b) => rankOf(a) - rankOf(b));
    for (const condition of order) parts.push(countButton(condition, counts.get(condition) + " " + condition, chosen));
    const nodes = [statuses.length + " station" + (statuses.length === 1 ? "" : "s") + (parts.length ? ": " : "")];
    parts.forEach((part, index) => nodes.push(...(index ? [" · ", part] : [part])));
    el.replaceChildren(...nodes);
  }
  if (!detail) document.title = (look ? "(" + look + ") " : "") + "pushsource";
}

function rankOf(condition) {
  const at = TROUBLE.indexOf(condition);
  return at < 0 ? TROUBLE.length : at;
}

function countButton(filter, text, chosen, extra = "") {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "count" + (extra ? " " + extra : "");
  b.dataset.filter = filter;
  b.textContent = text;
  b.setAttribute("aria-pressed", String(chosen === filter));
  b.title = chosen === filter ? "Show every station" : "Show only these stations";
  return b;
}

function filterBy(filter) {
  const value = stateFilter.value === filter ? "" : filter;
  if (value && ![...stateFilter.options].some((o) => o.value === value)) {
    stateFilter.append(new Option(CONDITION_LABEL[value] || value, value)); // a state the list lacks
  }
  stateFilter.value = value;
  if (detail) location.hash = "#/";
  arrange();
  renderSummary();
}

// --- what is coming (issue 23): up next, lengths, loudness, the player -----------------------

// What the station does once the queue is dry (status.idle), when nothing is up next.
const DRY = {
  silence: "nothing queued: silence goes out until a file arrives",
  stop: "nothing queued: the station goes off air until a file arrives",
  loop: "the loop (its next file is not known yet)",
  end: "nothing queued: the station ends after this track",
};
const QUEUE_EMPTY = {
  loop: "Nothing queued: the loop plays on (up next above).",
  silence: "Nothing queued: silence goes out until a file arrives.",
  stop: "Nothing queued: the station goes off air until a file arrives.",
  end: "Nothing queued: the station ends after this track.",
};

function lengthOf(seconds) {
  const el = document.createElement("span");
  el.className = "length";
  el.textContent = seconds == null ? "" : clock(seconds);
  return el;
}

// "−3.2 dB": the level change the loudness setting gave a track.
function gainText(db) {
  return (db > 0 ? "+" : db < 0 ? "−" : "±") + Math.abs(db).toFixed(1) + " dB";
}

function loopMark() {
  const el = document.createElement("span");
  el.className = "loop-mark";
  el.textContent = "from the loop";
  return el;
}

function gainMark(db) {
  const el = document.createElement("span");
  el.className = "gain-mark";
  el.textContent = gainText(db);
  el.title = "loudness: played " + gainText(db);
  return el;
}

function renderComing(status) {
  const now = status.now_playing;
  const gain = q(".gain");
  setText(gain, now && now.gain_db != null ? "· loudness " + gainText(now.gain_db) : "");
  gain.title = (now && now.gain_note) || "";
  const next = status.up_next;
  setText(q(".up-next-title"), next ? escaped(next.title || displayName(next.file)) : DRY[status.idle] || "nothing queued");
  q(".up-next-title").title = next ? escaped(next.file) : "";
  setText(q(".up-next-length"), next && next.duration != null ? clock(next.duration) : "");
  setText(q(".up-next-note"), next && next.source === "loop" ? "from the loop" : "");
  q(".up-next").classList.toggle("dry", !next);
  setText(q(".queue-empty"), QUEUE_EMPTY[status.idle] || "Nothing queued.");
}

// The station's public stream in an <audio>, the title beside it. preload
// "none": no connection (no listener counted) until play; a pause hangs up,
// so the next play starts live, not where the buffer stopped.
function renderPlayer(status) {
  const audio = q(".audio");
  const url = status.listen_url || "";
  if (audio.dataset.url !== url) {
    audio.dataset.url = url;
    stopPlayer();
  }
  audio.setAttribute("aria-label", "Listen to " + (status.name || status.id));
  const now = status.now_playing;
  setText(q(".player-title"), now ? escaped(now.title || now.file) : stateOf(status) === "on air" ? "Silence" : "Nothing playing");
}

function stopPlayer() {
  const audio = q(".audio");
  const url = audio.dataset.url || "";
  audio.pause();
  audio.removeAttribute("src");
  audio.load(); // drops the connection
  if (url) audio.src = url; // ready for the next play; preload none: not fetched
}

function wirePlayer() {
  q(".audio").addEventListener("pause", () => {
    if (q(".audio").getAttribute("src")) stopPlayer();
  });
}

// --- the station view -------------------------------------------------------------------

function q(selector) {
  return stationEl.querySelector(selector);
}

function openDetail(id, status) {
  detail = {
    id, status: null, clock: null, queueKey: null, historyKey: null, unplayableKey: null,
    outputsKey: null, outputRows: [],
  };
  stationEl.dataset.station = id;
  setText(q(".message"), "");
  setText(q(".upload-status"), "");
  q(".upload-progress").hidden = true;
  q(".library-search").value = "";
  q(".library").replaceChildren();
  setText(q(".library-count"), "");
  if (status) renderDetail(status);
  searchLibrary();
}

// The folder's files, asked for when the view opens, on a search and after
// a queue change: not polled.
let libraryTimer = null;
let libraryGeneration = 0;

async function searchLibrary() {
  if (!detail) return;
  const id = detail.id;
  const generation = ++libraryGeneration;
  const query = q(".library-search").value.trim();
  try {
    const found = await api("GET", stationPath(id, "/library?q=" + encodeURIComponent(query)));
    if (generation !== libraryGeneration || !detail || detail.id !== id) return;
    renderLibrary(found);
  } catch (error) {
    if (generation === libraryGeneration) setText(q(".library-count"), "Cannot search: " + error.message);
  }
}

function renderLibrary(found) {
  const items = found.files.map((item) => {
    const li = document.createElement("li");
    li.dataset.file = item.file;
    const name = document.createElement("span");
    name.className = "file";
    name.textContent = escaped(item.title || displayName(item.file));
    name.title = escaped(item.file);
    // The search is by path: the path shows under the title.
    const path = document.createElement("span");
    path.className = "path";
    path.textContent = escaped(item.file);
    const what = document.createElement("span");
    what.className = "what";
    what.append(name, path);
    const queue = button("enqueue", item.queued ? "Queued" : "Queue", "Queue " + item.file);
    queue.dataset.disabledByPlace = item.queued ? "1" : "";
    const tools = document.createElement("span");
    tools.className = "tools";
    tools.append(lengthOf(item.duration), queue);
    li.append(what, tools);
    return li;
  });
  q(".library").replaceChildren(...items);
  const shown = found.files.length;
  setText(q(".library-count"), found.total === 0 ? "No file matches." :
    shown < found.total ? shown + " of " + found.total + " files: narrow the search" : found.total + " files");
  applyLock();
}

// Outages (on air, then lost); while one lasts, the attempts that failed in it.
function reconnectsText(conn) {
  const n = conn.reconnects || 0;
  let text = n ? n + " reconnect" + (n === 1 ? "" : "s") : "no reconnects";
  if (conn.attempts) text += " · " + conn.attempts + " failed attempt" + (conn.attempts === 1 ? "" : "s");
  return text;
}

function renderDetail(status) {
  if (!detail || detail.id !== status.id) return;
  detail.status = status;
  const conn = status.connection || {};
  const state = stateOf(status);
  const name = status.name || status.id;
  stationEl.dataset.state = state;
  document.title = (NEEDS_LOOK.has(conditionOf(status)) ? "⚠ " : "") + name + " · pushsource";
  setText(q(".name"), name);
  setText(q(".state"), state);
  setText(q(".reconnects"), [reconnectsText(conn), PROBLEMS.has(state) ? downText(conn) : ""].filter(Boolean).join(" · "));
  setText(q(".format"), formatOf(status));
  const listeners = listenersOf(status);
  setText(q(".listeners"), listeners == null ? "" : listeners + " listener" + (listeners === 1 ? "" : "s"));
  setText(q(".conn-error"), conn.error || "");
  setText(q(".dead-air"), deadAirText(status));

  const listen = q(".listen");
  const url = status.listen_url || "";
  if (listen.getAttribute("href") !== url) listen.href = url;
  setText(listen, url);
  const base = "/listen/" + encodeURIComponent(status.id);
  if (q(".m3u").getAttribute("href") !== base + ".m3u") {
    q(".m3u").href = base + ".m3u";
    q(".pls").href = base + ".pls";
  }

  const now = status.now_playing;
  setText(q(".now-title"), now ? escaped(now.title || now.file) : state === "on air" ? "Silence (nothing queued)" : "Nothing playing");
  q(".now-title").dataset.file = now ? now.file : "";
  detail.clock = makeClock(status);
  tickDetail();

  renderLive(status);
  renderOutputs(outputsOf(status));
  renderComing(status);
  renderPlayer(status);
  if (status.queue) renderQueue(status.queue);
  if (status.history) renderHistory(status.history);
  if (status.unplayable) renderUnplayable(status.unplayable);
  applyLock();
}

// --- a DJ's set (issue 22) -------------------------------------------------------------

// A DJ's title in the history: whose set it was.
function liveMark(user) {
  const mark = document.createElement("span");
  mark.className = "live-mark";
  mark.textContent = "● live: " + user;
  return mark;
}

// A recorded set's file (record in [station.live]), served by the control API.
function recordingLink(item) {
  const link = document.createElement("a");
  link.className = "recording";
  link.href = item.recording_url;
  link.download = "";
  link.textContent = "recording";
  link.title = "Download the recording of " + item.live + "'s set";
  return link;
}

// During a set: the DJ, since when, what comes in and the folder's track it
// cut; Kick while a DJ is connected; Skip off (it would not touch the DJ).
function renderLive(status) {
  const live = status.live || {};
  const onAir = Boolean(live.on_air);
  const box = q(".live-box");
  box.hidden = !(onAir || live.user);
  setText(q(".now-label"), onAir ? "Live now" : "Now playing");
  setText(q(".live-user"), live.user || "");
  setText(q(".live-since"), onAir && live.since ? "since " + whenOf(live.since) : live.user ? "connected, not on air yet" : "");
  const f = live.format;
  const kib = Math.round((live.bytes_in || 0) / 1024);
  const parts = onAir ? [kib + " KiB in", (live.frames_in || 0) + " frames", f ? "MP3 " + outputFormatOf(f) : ""] : [];
  setText(q(".live-in"), parts.filter(Boolean).join(" · "));
  const cut = (status.now_playing || {}).interrupted;
  setText(q(".live-cut"), cut ? "Folder: " + escaped(cut.title || cut.file) + " — " + (cut.state === "skipped" ? "skipped" : "paused at " + clock(cut.elapsed)) : "");
  q(".kick").dataset.disabledByPlace = live.user ? "" : "1";
  const skip = q(".skip");
  skip.dataset.disabledByPlace = onAir ? "1" : "";
  if (onAir) skip.setAttribute("aria-label", "Skip is off while a DJ is live: kick them to end the set");
  else skip.removeAttribute("aria-label");
}

function tickDetail() {
  const c = detail && detail.clock;
  const elapsed = elapsedOf(c);
  const duration = c ? c.duration : null;
  const percent = elapsed != null && duration ? (100 * elapsed) / duration : 0;
  q(".progress-fill").style.width = percent.toFixed(2) + "%";
  q(".progress").setAttribute("aria-valuenow", String(Math.round(percent)));
  setText(q(".elapsed"), clock(elapsed));
  setText(q(".duration"), clock(duration));
}

function button(className, text, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.title = label;
  return b;
}

function displayName(file) {
  const base = file.split("/").pop();
  return base.replace(/\.[^.]+$/, "") || base;
}

function renderQueue(queue) {
  const key = JSON.stringify(queue.map((item) => [item.file, item.title, item.duration, item.loop]));
  if (key === detail.queueKey || dragging) return;
  detail.queueKey = key;
  const items = queue.map((item, index) => {
    const li = document.createElement("li");
    li.dataset.file = item.file;
    li.tabIndex = 0;
    const name = document.createElement("span");
    name.className = "file";
    name.textContent = escaped(item.title || displayName(item.file));
    name.title = escaped(item.file);
    const tools = document.createElement("span");
    tools.className = "tools";
    tools.append(lengthOf(item.duration));
    if (item.loop) name.append(" ", loopMark()); // cued from the loop, not queued by anyone
    const label = item.title || item.file;
    const up = button("up", "↑", "Move " + label + " up");
    const down = button("down", "↓", "Move " + label + " down");
    up.dataset.disabledByPlace = index === 0 ? "1" : "";
    down.dataset.disabledByPlace = index === queue.length - 1 ? "1" : "";
    tools.append(up, down, button("remove", "Remove", "Remove " + label + " from the queue"));
    li.append(name, tools);
    return li;
  });
  const list = q(".queue");
  list.replaceChildren(...items);
  setText(q(".queue-count"), queue.length ? "(" + queue.length + ")" : "");
  q(".queue-empty").hidden = queue.length > 0;
  if (focusFile) {
    const target = [...list.children].find((li) => li.dataset.file === focusFile);
    focusFile = null;
    if (target) target.focus();
  }
}

// One line per output when there are several. The lines are made when the
// outputs change (their mounts and servers), and updated in place on each poll.
function renderOutputs(outputs) {
  const box = q(".outputs-box");
  const several = outputs.length > 1;
  if (box.hidden === several) box.hidden = !several;
  if (!several) return;
  const key = JSON.stringify(outputs.map((o) => [o.mount, o.server]));
  if (key !== detail.outputsKey) {
    detail.outputsKey = key;
    detail.outputRows = outputs.map(() => newOutputRow());
    q(".outputs").replaceChildren(...detail.outputRows.map((row) => row.li));
  }
  const home = outputs[0].server;
  outputs.forEach((output, index) => {
    const c = detail.outputRows[index];
    const state = output.state || "unknown";
    if (c.li.dataset.state !== state) c.li.dataset.state = state;
    setText(c.mount, output.mount);
    setText(c.server, output.server === home ? "" : "on " + output.server);
    setText(c.format, outputFormatOf(output.format) + (output.converted ? " (converted)" : ""));
    setText(c.badge, state);
    c.badge.title = output.error || "";
    const n = output.reconnects || 0;
    let again = n ? n + " reconnect" + (n === 1 ? "" : "s") : "";
    if (output.attempts) again += (again ? " · " : "") + output.attempts + " failed attempt" + (output.attempts === 1 ? "" : "s");
    setText(c.reconnects, again);
    const heard = output.listeners;
    setText(c.listeners, typeof heard === "number" ? heard + " listener" + (heard === 1 ? "" : "s") : "");
    setText(c.error, output.error || "");
    const url = output.listen_url || "";
    if (c.listen.getAttribute("href") !== url) c.listen.href = url;
    c.listen.title = url;
  });
}

function newOutputRow() {
  const li = document.createElement("li");
  const part = (className, tag = "span") => {
    const el = document.createElement(tag);
    el.className = className;
    return el;
  };
  const c = {
    li,
    mount: part("output-mount"),
    server: part("output-server"),
    format: part("output-format"),
    badge: part("output-state badge"),
    reconnects: part("output-reconnects"),
    listeners: part("output-listeners"),
    listen: part("output-listen", "a"),
    error: part("output-error"),
  };
  c.listen.target = "_blank";
  c.listen.rel = "noopener";
  c.listen.textContent = "listen";
  const where = part("output-where");
  where.append(c.mount, " ", c.server);
  li.append(where, c.format, c.badge, c.reconnects, c.listeners, c.listen, c.error);
  return c;
}

function renderHistory(history) {
  const key = JSON.stringify(history);
  if (key === detail.historyKey) return;
  detail.historyKey = key;
  const items = history.map((item) => {
    const li = document.createElement("li");
    li.dataset.file = item.file;
    if (item.skipped) li.classList.add("skipped");
    const title = document.createElement("span");
    title.className = "file";
    title.textContent = escaped(item.title || displayName(item.file));
    title.title = escaped(item.file);
    li.append(title);
    if (item.duration != null) li.append(" ", lengthOf(item.duration));
    if (item.gain_db != null) li.append(" ", gainMark(item.gain_db));
    if (item.skipped) {
      const mark = document.createElement("span");
      mark.className = "skipped-mark";
      mark.textContent = "skipped";
      li.append(" ", mark);
    }
    if (item.live) li.append(" ", liveMark(item.live));
    if (typeof item.recording_url === "string" && item.recording_url.startsWith("/api/stations/")) li.append(" ", recordingLink(item));
    const heard = historyListeners(item);
    if (heard) li.append(" ", heard);
    if (item.started) {
      const time = document.createElement("time");
      time.dateTime = item.started;
      const when = new Date(item.started);
      time.textContent = isNaN(when) ? item.started : when.toLocaleTimeString();
      li.append(" ", time);
    }
    // A live session (item.live: the DJ) has no file to queue again.
    if (!item.live) li.append(" ", button("requeue", "Queue again", "Queue " + (item.title || item.file) + " again"));
    return li;
  });
  q(".history").replaceChildren(...items);
  q(".history-empty").hidden = history.length > 0;
}

function renderUnplayable(list) {
  const key = JSON.stringify(list);
  if (key === detail.unplayableKey) return;
  detail.unplayableKey = key;
  const items = list.map((item) => {
    const li = document.createElement("li");
    li.dataset.file = item.file;
    const file = document.createElement("span");
    file.className = "file";
    file.textContent = escaped(item.file);
    const reason = document.createElement("span");
    reason.className = "reason";
    reason.textContent = item.reason;
    li.append(file, ": ", reason);
    return li;
  });
  q(".unplayable").replaceChildren(...items);
  setText(q(".unplayable-count"), list.length ? "(" + list.length + ")" : "");
  q(".unplayable-empty").hidden = list.length > 0;
}

// Without a token every action is off, and says why.
function applyLock() {
  const locked = !token();
  stationEl.classList.toggle("locked", locked);
  for (const b of stationEl.querySelectorAll(".skip, .kick, .remove, .requeue, .up, .down, .enqueue, .file-input")) {
    b.disabled = locked || b.dataset.disabledByPlace === "1";
    b.title = locked ? LOCKED_HINT : b.getAttribute("aria-label") || "";
  }
  for (const li of stationEl.querySelectorAll(".queue li")) li.draggable = !locked;
}

// --- actions ----------------------------------------------------------------------------

async function act(rest, body) {
  if (!detail) return;
  const id = detail.id;
  try {
    const status = await api("POST", stationPath(id, rest), body);
    setText(q(".message"), "");
    pollGeneration++; // an answer already on its way is older than this one
    renderDetail(status);
    schedule();
    if (rest.startsWith("/queue")) searchLibrary(); // its "queued" marks changed
  } catch (error) {
    setText(q(".message"), error.message);
  }
}

function queueFiles() {
  return [...q(".queue").querySelectorAll("li[data-file]")].map((li) => li.dataset.file);
}

function move(file, index) {
  focusFile = file;
  return act("/queue/move", { file, index });
}

function wireDetail() {
  q(".skip").addEventListener("click", () => act("/skip"));
  q(".kick").addEventListener("click", () => act("/live/kick", { ban_minutes: Math.max(0, Math.floor(Number(q(".ban").value) || 0)) }));
  q(".copy").addEventListener("click", async () => {
    const url = q(".listen").href;
    try {
      await navigator.clipboard.writeText(url);
      setText(q(".copied"), "copied");
    } catch (_) {
      // No clipboard (not a secure context): select the link's text instead.
      const range = document.createRange();
      range.selectNodeContents(q(".listen"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      setText(q(".copied"), "selected: press Ctrl+C");
    }
    setTimeout(() => setText(q(".copied"), ""), 3000);
  });
  const list = q(".queue");
  list.addEventListener("click", (event) => {
    const b = event.target.closest("button");
    if (!b || b.disabled) return;
    const file = b.closest("li").dataset.file;
    const at = queueFiles().indexOf(file);
    if (b.classList.contains("remove")) act("/queue/remove", { file });
    else if (b.classList.contains("up")) move(file, at - 1);
    else if (b.classList.contains("down")) move(file, at + 1);
  });
  list.addEventListener("keydown", (event) => {
    const li = event.target.closest("li[data-file]");
    if (!li || event.target !== li || !token()) return;
    const files = queueFiles();
    const at = files.indexOf(li.dataset.file);
    if (event.altKey && event.key === "ArrowUp" && at > 0) {
      event.preventDefault();
      move(li.dataset.file, at - 1);
    } else if (event.altKey && event.key === "ArrowDown" && at < files.length - 1) {
      event.preventDefault();
      move(li.dataset.file, at + 1);
    } else if (!event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
      event.preventDefault();
      const next = event.key === "ArrowUp" ? li.previousElementSibling : li.nextElementSibling;
      if (next) next.focus();
    } else if (event.key === "Delete") {
      event.preventDefault();
      act("/queue/remove", { file: li.dataset.file });
    }
  });
  q(".history").addEventListener("click", (event) => {
    const b = event.target.closest(".requeue");
    if (b && !b.disabled) act("/queue", { file: b.closest("li").dataset.file });
  });
  q(".library-form").addEventListener("submit", (event) => {
    event.preventDefault();
    searchLibrary();
  });
  q(".library-search").addEventListener("input", () => {
    clearTimeout(libraryTimer);
    libraryTimer = setTimeout(searchLibrary, 200);
  });
  q(".library").addEventListener("click", (event) => {
    const b = event.target.closest(".enqueue");
    if (b && !b.disabled) act("/queue", { file: b.closest("li").dataset.file });
  });
  wireDrag(list);
  wireUpload();
  wirePlayer();
}

function clearMarks(list) {
  for (const li of list.querySelectorAll("li")) li.classList.remove("drop-before", "drop-after");
}

function wireDrag(list) {
  list.addEventListener("dragstart", (event) => {
    const li = event.target.closest("li[data-file]");
    if (!li || !token()) return;
    dragging = { file: li.dataset.file };
    li.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", li.dataset.file);
  });
  list.addEventListener("dragover", (event) => {
    if (!dragging) return;
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
    if (!dragging) return;
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
      endDrag(list);
      return; // dropped on itself
    }
    endDrag(list);
    act("/queue/move", { file, index });
  });
  list.addEventListener("dragend", () => endDrag(list));
}

function endDrag(list) {
  clearMarks(list);
  for (const li of list.querySelectorAll(".dragging")) li.classList.remove("dragging");
  const was = dragging;
  dragging = null;
  if (was && detail) detail.queueKey = null; // render what the server says next
}

function wireUpload() {
  const zone = q(".dropzone");
  const input = q(".file-input");
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
    uploadAll([...event.dataTransfer.files]);
  });
  input.addEventListener("change", () => {
    uploadAll([...input.files]);
    input.value = "";
  });
}

async function uploadAll(files) {
  const status = q(".upload-status");
  const bar = q(".upload-progress");
  if (!token()) {
    setText(status, LOCKED_HINT + " to upload.");
    return;
  }
  const id = detail.id;
  for (const file of files) {
    bar.hidden = false;
    bar.value = 0;
    try {
      const saved = await upload(id, file, (percent) => {
        bar.value = percent;
        setText(status, "Uploading " + file.name + ": " + percent + "%");
      });
      bar.value = 100;
      setText(status, "Uploaded " + saved.file);
    } catch (error) {
      setText(status, "Upload of " + file.name + " failed: " + error.message);
    }
  }
  setTimeout(() => { bar.hidden = true; }, 1500);
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

// --- listeners over time ------------------------------------------------------------------
// The overview: every station's last 24 hours (a sparkline in its row) and
// their total (a chart); a station: its own chart, 24 hours or 7 days. Drawn
// here as inline SVG; asked for every LISTENERS_MS (the server samples every
// 10 s and keeps a sample a minute). A count not known is a gap, never 0.

const LISTENERS_MS = 30000;
// SVG's namespace, as the HTML parser gives it: the page's files spell no URL.
const SVG_NS = (() => {
  const t = document.createElement("template");
  t.innerHTML = "<svg></svg>";
  return t.content.firstChild.namespaceURI;
})();
let listenersTimer = null;
let listenersGeneration = 0;
let chartHours = 24;
let sparks = new Map(); // station id -> its part of the last GET /api/listeners
let drawn = null; // the last answer drawn, to draw again at a new width

function scheduleListeners(delay = LISTENERS_MS) {
  clearTimeout(listenersTimer);
  listenersTimer = setTimeout(pollListeners, delay);
}

async function pollListeners() {
  const generation = ++listenersGeneration;
  const id = detail ? detail.id : null;
  try {
    if (id) {
      const query = chartHours > 24 ? "?hours=" + chartHours + "&step=10" : "?hours=" + chartHours;
      const data = await api("GET", stationPath(id, "/listeners" + query));
      if (generation === listenersGeneration && detail && detail.id === id) {
        drawn = () => renderStationListeners(data);
        drawn();
      }
    } else {
      const data = await api("GET", "/api/listeners");
      if (generation === listenersGeneration) {
        drawn = () => renderAllListeners(data);
        drawn();
      }
    }
  } catch (error) {
    // The status poll says when the server cannot be reached; a station
    // that keeps no series (404) says so in its box.
    if (generation === listenersGeneration && id && detail && detail.id === id) {
      const box = q(".station-listeners");
      setText(box.querySelector(".listeners-figures"), "No listener counts: " + error.message);
      box.querySelector(".listeners-chart").replaceChildren();
    }
  } finally {
    if (generation === listenersGeneration) scheduleListeners();
  }
}

function svgEl(name, attrs = {}) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  return el;
}

function plural(n, word) {
  return n + " " + word + (n === 1 ? "" : "s");
}

function timeText(seconds, withDay) {
  const when = new Date(seconds * 1000);
  const hm = when.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  return withDay ? when.toLocaleDateString([], { weekday: "short" }) + " " + hm : hm;
}

// The runs of known counts, as [first, end) index pairs.
function knownRuns(samples) {
  const runs = [];
  let from = -1;
  samples.forEach((n, i) => {
    if (n == null) {
      if (from >= 0) runs.push([from, i]);
      from = -1;
    } else if (from < 0) {
      from = i;
    }
  });
  if (from >= 0) runs.push([from, samples.length]);
  return runs;
}

// A step line (each sample holds for its span) and the area under it; a
// count not known breaks both.
function stepPaths(samples, x, y, base) {
  let line = "", area = "";
  for (const [from, end] of knownRuns(samples)) {
    let d = "";
    for (let i = from; i < end; i++) {
      const level = y(samples[i]).toFixed(1);
      d += (i === from ? "M" : "L") + x(i).toFixed(1) + " " + level + "L" + x(i + 1).toFixed(1) + " " + level;
    }
    line += d;
    area += d + "L" + x(end).toFixed(1) + " " + base + "L" + x(from).toFixed(1) + " " + base + "Z";
  }
  return { line, area };
}

// 1, 2, 5, 10, 20, 50...: the chart's top, at or above n.
function niceTop(n) {
  let step = 1;
  for (;;) {
    for (const m of [1, 2, 5]) if (m * step >= n) return m * step;
    step *= 10;
  }
}

// A chart of data {start, every, samples, peak} in box (its width as laid out).
function drawChart(box, data, height, label) {
  const samples = data.samples || [];
  if (!data.peak) {
    box.replaceChildren(); // nothing known: the figures say so, no empty axes
    return;
  }
  const width = Math.max(240, Math.floor(box.clientWidth || 600));
  const left = 36, right = 8, top = 18, bottom = 20; // top: room for the peak's label
  const plotW = width - left - right, plotH = height - top - bottom;
  const peak = data.peak ? data.peak.listeners : 0;
  const ceiling = niceTop(Math.max(1, peak));
  const n = Math.max(1, samples.length);
  const x = (i) => left + (plotW * i) / n;
  const y = (v) => top + plotH - (plotH * v) / ceiling;
  const svg = svgEl("svg", { class: "chart", width, height, viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": label });
  const title = svgEl("title");
  title.textContent = label;
  svg.append(title);
  for (const v of [0, ceiling / 2, ceiling]) {
    if (v !== Math.round(v)) continue;
    svg.append(svgEl("line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
    const t = svgEl("text", { class: "axis", x: left - 5, y: y(v) + 4, "text-anchor": "end" });
    t.textContent = String(v);
    svg.append(t);
  }
  // Time ticks on the hour (every 3 hours) or at midnight (7 days), local time.
  const start = data.start, span = samples.length * data.every;
  const days = span > 2 * 86400;
  const tick = new Date(start * 1000);
  tick.setMinutes(0, 0, 0);
  if (days) tick.setHours(0);
  if (days) while (tick.getTime() / 1000 < start) tick.setDate(tick.getDate() + 1);
  else while (tick.getTime() / 1000 < start || tick.getHours() % 3) tick.setHours(tick.getHours() + 1);
  for (; tick.getTime() / 1000 < start + span; days ? tick.setDate(tick.getDate() + 1) : tick.setHours(tick.getHours() + 3)) {
    const at = x((tick.getTime() / 1000 - start) / data.every);
    svg.append(svgEl("line", { class: "tick", x1: at, x2: at, y1: top + plotH, y2: top + plotH + 4 }));
    const t = svgEl("text", { class: "axis", x: at, y: height - 4, "text-anchor": "middle" });
    t.textContent = days
      ? tick.toLocaleDateString([], { weekday: "short", day: "numeric" })
      : tick.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
    svg.append(t);
  }
  const paths = stepPaths(samples, x, y, (top + plotH).toFixed(1));
  svg.append(svgEl("path", { class: "area", d: paths.area }), svgEl("path", { class: "line", d: paths.line }));
  if (data.peak) {
    const i = Math.floor((data.peak.at - start) / data.every);
    const px = x(i + 0.5), py = y(peak);
    svg.append(svgEl("circle", { class: "peak", cx: px, cy: py, r: 3.5 }));
    const t = svgEl("text", { class: "peak-label", x: px, y: py - 7, "text-anchor": px > width - 80 ? "end" : px < left + 40 ? "start" : "middle" });
    t.textContent = "peak " + peak;
    svg.append(t);
  }
  box.replaceChildren(svg);
}

// "Now 3 · peak 7 at Tue 14:02" (or why there is nothing to show yet).
function figuresText(part, current, spanText) {
  if (!part.samples || !part.peak) return "No listener counts in the " + spanText + " yet: a count not known is left as a gap, not 0.";
  const now = current == null ? "not known" : String(current);
  return "Now " + now + " · peak " + part.peak.listeners + " at " + timeText(part.peak.at, true) + " · " + spanText;
}

function renderStationListeners(data) {
  const box = q(".station-listeners");
  const span = chartHours > 24 ? "last 7 days" : "last 24 hours";
  // "now" is the status' count: the series' last sample may be 10 s older.
  const live = detail.status ? listenersOf(detail.status) : null;
  const current = live ?? data.current;
  setText(box.querySelector(".listeners-figures"), figuresText(data, current, span));
  const label = "Listeners over the " + span + (data.peak ? ": peak " + data.peak.listeners : "") + (current == null ? "" : ", now " + current);
  drawChart(box.querySelector(".listeners-chart"), data, 180, label);
  box.dataset.hours = String(chartHours);
}

function renderAllListeners(data) {
  sparks = new Map((data.stations || []).map((part) => [part.id, { ...part, start: data.start, every: data.every }]));
  for (const [id, row] of rows) if (row.cells.spark) drawSpark(row.cells.spark, sparks.get(id));
  const box = $("#listeners-total");
  const total = { ...data.total, start: data.start, every: data.every };
  // "now": the rows' counts (polled every second), where any is known.
  const known = statuses.map(listenersOf).filter((n) => typeof n === "number");
  const now = known.length ? known.reduce((a, b) => a + b, 0) : total.current;
  setText(box.querySelector(".listeners-figures"), figuresText(total, now, "last 24 hours"));
  const label = "Listeners of all stations over the last 24 hours" + (total.peak ? ": peak " + total.peak.listeners : "");
  drawChart(box.querySelector(".listeners-chart"), total, 120, label);
}

// The row's cell for its sparkline, made with the row (newRow calls it).
function addSparkCell(el, cells) {
  const td = document.createElement("td");
  td.className = "cell-spark col-spark";
  cells.listeners.after(td);
  cells.spark = td;
  if (el.dataset.row && sparks.has(el.dataset.row)) drawSpark(td, sparks.get(el.dataset.row));
}

function drawSpark(td, part) {
  if (!part || !part.samples || !part.peak) {
    td.replaceChildren();
    td.title = "no listener counts in the last 24 hours";
    return;
  }
  const samples = part.samples;
  const width = 80, height = 18, peak = Math.max(1, part.peak.listeners);
  const x = (i) => (width * i) / samples.length;
  const y = (v) => 1 + (height - 2) * (1 - v / peak);
  const paths = stepPaths(samples, x, y, String(height));
  const label = "last 24 hours: peak " + part.peak.listeners + " at " + timeText(part.peak.at, true);
  const svg = svgEl("svg", { class: "spark", width, height, viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": label });
  svg.append(svgEl("path", { class: "area", d: paths.area }), svgEl("path", { class: "line", d: paths.line }));
  const peakText = document.createElement("span");
  peakText.className = "spark-peak";
  peakText.textContent = "↑" + part.peak.listeners;
  td.title = label;
  td.replaceChildren(svg, peakText);
}

// A history entry's listeners at its start and at its end: "3 → 5 (+2)".
function historyListeners(item) {
  const from = item.listeners_start, to = item.listeners_end;
  if (typeof from !== "number" && typeof to !== "number") return null;
  const span = document.createElement("span");
  span.className = "heard";
  const shown = (n) => (typeof n === "number" ? String(n) : "?");
  if (to === undefined) {
    span.textContent = plural(from, "listener") + " at the start";
  } else {
    span.textContent = shown(from) + " → " + shown(to) + " listeners";
    if (typeof from === "number" && typeof to === "number" && from !== to) {
      const change = document.createElement("span");
      change.className = to > from ? "kept gained" : "kept lost";
      change.textContent = " (" + (to > from ? "+" : "−") + Math.abs(to - from) + ")";
      span.append(change);
    }
  }
  span.title = "listeners when the track began and when it ended";
  return span;
}

function wireListeners() {
  window.addEventListener("hashchange", () => {
    drawn = null;
    scheduleListeners(0);
  });
  // Drawn again when a chart's box changes width: a window resized, or a
  // view shown after it was drawn hidden (at a width guessed then).
  let resizing = null;
  const widths = new Map();
  const sizer = new ResizeObserver((entries) => {
    let changed = false;
    for (const entry of entries) {
      const width = Math.floor(entry.contentRect.width);
      if (width && widths.get(entry.target) !== width) changed = true;
      widths.set(entry.target, width);
    }
    if (!changed) return;
    clearTimeout(resizing);
    resizing = setTimeout(() => drawn && drawn(), 100);
  });
  for (const box of document.querySelectorAll(".listeners-box")) sizer.observe(box);
  for (const b of q(".listeners-range").querySelectorAll("button")) {
    b.addEventListener("click", () => {
      chartHours = Number(b.dataset.hours);
      for (const other of q(".listeners-range").querySelectorAll("button")) other.setAttribute("aria-pressed", String(other === b));
      scheduleListeners(0);
    });
  }
  scheduleListeners(0);
}

// --- views and start ----------------------------------------------------------------------

function route() {
  const match = /^#\/station\/(.+)$/.exec(location.hash);
  const id = match ? decodeURIComponent(match[1]) : null;
  $("#overview").hidden = id !== null;
  stationEl.hidden = id === null;
  if (id === null || (detail && detail.id !== id)) stopPlayer();
  if (id === null) {
    detail = null;
    document.title = "pushsource";
    renderOverview(statuses);
  } else if (!detail || detail.id !== id) {
    const row = rows.get(id);
    openDetail(id, row ? row.status : null);
  }
  return id;
}

function animate() {
  if (detail) tickDetail();
  else for (const row of rows.values()) if (row.clock && row.clock.running && !row.el.hidden) tickRow(row);
  setTimeout(() => requestAnimationFrame(animate), 250);
}

function initialStatus() {
  try {
    const data = JSON.parse($("#initial-status").textContent);
    return Array.isArray(data.stations) ? data.stations : null;
  } catch (_) {
    return null; // served without it: the first poll fills the page
  }
}

tokenInput.value = token();
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = tokenInput.value.trim();
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
  setText(q(".message"), ""); // a "wrong token" is answered by a new one
  applyLock();
});
$("#token-forget").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  tokenInput.value = "";
  applyLock();
});
// A file dropped outside a drop zone must not make the browser leave the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());
window.addEventListener("hashchange", () => {
  const id = route();
  schedule(id === null ? POLL_MS : 0); // a station's queue and history: ask at once
});

wireOverview();
wireDetail();
wireListeners();
const initial = initialStatus();
if (initial) renderOverview(initial);
performance.mark("pushsource-rendered");
const opened = route();
applyLock();
schedule(initial && opened === null ? POLL_MS : 0);
animate();
