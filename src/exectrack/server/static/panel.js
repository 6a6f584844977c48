// exectrack runs panel: plain ES modules, no framework, no build step. This one holds
// the page's state: filters and the URL, the run table, live updates, the summary
// strip and the details view. api.js talks to the server (every URL relative to the
// mount root, so the panel works at "/" and under a prefix); format.js builds
// elements from text and formats times. Every stored string is rendered with
// textContent, never parsed as HTML.

import { TOKEN, TOKEN_IN_URL, apiURL, getJSON } from "./api.js";
import {
  OPEN, STATUSES, compareKeys, elapsedMs, formatClock, formatLocal, formatMs, formatRate,
  h, isoToUs, parseFilterTime, runKey, statusPill,
} from "./format.js";

const PAGE_SIZE = 50;
const REPORT_WINDOW = "24h";
const REPORT_MIN_INTERVAL_MS = 5000;
const POLL_INTERVAL_MS = 3000;
const RETRY_MS = 5000;
const FILTER_TEXT_KEYS = ["source", "session_id", "source_ref", "text", "since", "until"];
// Text search uses a trigram index: shorter text would make the server read every run.
const MIN_TEXT = 3;
const SHORT_TEXT = {
  parameter: "text",
  message: `type at least ${MIN_TEXT} characters: shorter text cannot use the search index`,
};

const RANK = { queued: 0, running: 1 }; // anything else is terminal: rank 2

// The fields of a run in the order the details view lists them (others follow).
const FIELD_ORDER = [
  "id", "status", "source", "source_ref", "session_id", "parent_id",
  "started_at", "finished_at", "duration_ms", "items", "first_item_ms",
  "error_code", "error_message", "retryable",
  "owner", "heartbeat_at", "lease_until", "deadline_at", "updated_at",
];
const FIELD_LABELS = {
  id: "Run id", status: "Status", source: "Source", source_ref: "Source ref",
  session_id: "Session id", parent_id: "Parent", started_at: "Started",
  finished_at: "Finished", duration_ms: "Duration", items: "Items",
  first_item_ms: "Time to first item", error_code: "Error code",
  error_message: "Error message", retryable: "Retryable", owner: "Owner",
  heartbeat_at: "Heartbeat", lease_until: "Lease until", deadline_at: "Deadline",
  updated_at: "Updated", metadata: "Metadata", link: "Link to this run",
};
const COPYABLE = new Set(["id", "session_id", "error_message"]);
const TIME_FIELDS = new Set([
  "started_at", "finished_at", "heartbeat_at", "lease_until", "deadline_at", "updated_at",
]);

const $ = (sel) => document.querySelector(sel);

const state = {
  filters: emptyFilters(),
  rows: new Map(), // run id -> {run, tr}
  nextCursor: null,
  oldestKey: null, // (us, id) of the last row a page returned: live inserts stay above it
  changesCursor: null,
  generation: 0, // bumped by each reload; late answers of older ones are dropped
  live: true,
  source: null, // the EventSource while live
  pollTimer: null,
  detailsId: null, // the run whose details are open (live is paused meanwhile)
  detailsRun: null,
  detailsChildren: [],
  detailsReturnFocus: null,
  currentRow: null, // the row Tab reaches (roving tabindex)
  lastReport: 0,
  reportTimer: null,
};

// -- small helpers ----------------------------------------------------------------

function emptyFilters() {
  return { source: "", status: [], session_id: "", source_ref: "", text: "", since: "", until: "" };
}

// -- filters and the URL ----------------------------------------------------------

/** Filters and the selected run from the page URL (query: filters, hash: run). */
function readURL() {
  const params = new URLSearchParams(location.search);
  const filters = emptyFilters();
  for (const key of FILTER_TEXT_KEYS) filters[key] = params.get(key) || "";
  filters.source = params.getAll("source").join(", ");
  filters.status = params.getAll("status").filter((s) => Object.hasOwn(STATUSES, s));
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  return { filters, runId: hash.get("run") || null };
}

function writeURL() {
  const params = new URLSearchParams();
  for (const [key, value] of filterParams()) params.append(key, value);
  if (TOKEN_IN_URL) params.set("token", TOKEN);
  const query = params.toString();
  const hash = state.detailsId ? `#run=${encodeURIComponent(state.detailsId)}` : "";
  const url = `${location.pathname}${query ? `?${query}` : ""}${hash}`;
  if (url !== `${location.pathname}${location.search}${location.hash}`) {
    history.replaceState(null, "", url);
  }
}

/** The source filter's names: "chat, skill" means either (the API's repeated source). */
function sourcesOf(filters) {
  return filters.source.split(/[\s,]+/).filter(Boolean);
}

/** The current filters as API query parameters (source and status repeat). */
function filterParams() {
  const params = [];
  const f = state.filters;
  for (const source of sourcesOf(f)) params.push(["source", source]);
  for (const status of f.status) params.push(["status", status]);
  for (const key of ["session_id", "source_ref", "text", "since", "until"]) {
    if (f[key]) params.push([key, f[key]]);
  }
  return params;
}

function fillForm() {
  const form = $("#filters");
  for (const key of FILTER_TEXT_KEYS) form.elements[key].value = state.filters[key];
  for (const box of form.querySelectorAll("input[name=status]")) {
    box.checked = state.filters.status.includes(box.value);
  }
}

function readForm() {
  const form = $("#filters");
  const filters = emptyFilters();
  for (const key of FILTER_TEXT_KEYS) filters[key] = form.elements[key].value.trim();
  filters.status = [...form.querySelectorAll("input[name=status]:checked")].map((b) => b.value);
  return filters;
}

/** Whether a run matches the current filters, as the server's query layer decides. */
function matchesFilters(run) {
  const f = state.filters;
  const sources = sourcesOf(f);
  if (sources.length && !sources.includes(run.source)) return false;
  if (f.status.length && !f.status.includes(run.status)) return false;
  if (f.session_id && run.session_id !== f.session_id) return false;
  if (f.source_ref && run.source_ref !== f.source_ref) return false;
  if (f.text) {
    const needle = f.text.toLowerCase();
    const hay = [run.source_ref, run.error_message].filter(Boolean).map((s) => s.toLowerCase());
    if (!hay.some((s) => s.includes(needle))) return false;
  }
  const now = Date.now();
  const started = isoToUs(run.started_at) / 1000;
  if (f.since) {
    const since = parseFilterTime(f.since, now);
    if (since !== null && started < since) return false;
  }
  if (f.until) {
    const until = parseFilterTime(f.until, now);
    if (until !== null && started >= until) return false;
  }
  return true;
}

function showError(err) {
  const box = $("#error");
  const form = $("#filters");
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  if (!err && textTooShort(readForm())) err = SHORT_TEXT; // still true after a load
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = err.parameter ? `${err.parameter}: ${err.message}` : err.message;
  const input = err.parameter && form.elements[err.parameter];
  if (input && input.setAttribute) input.setAttribute("aria-invalid", "true");
}

// -- the run table ----------------------------------------------------------------

// Keyboard: the table is one Tab stop (a roving tabindex); arrows, Home and End move
// between rows, Enter opens the focused row's details.
const ROW_KEYS = {
  ArrowDown: (tr) => tr.nextElementSibling,
  ArrowUp: (tr) => tr.previousElementSibling,
  Home: (tr) => tr.parentElement.firstElementChild,
  End: (tr) => tr.parentElement.lastElementChild,
};

function buildRow(run) {
  const tr = h("tr", { tabindex: "-1", "data-id": run.id, class: "run-row" });
  tr.addEventListener("click", () => openDetails(run.id, tr));
  tr.addEventListener("focus", () => setCurrentRow(tr));
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      openDetails(tr.dataset.id, tr);
    } else if (Object.hasOwn(ROW_KEYS, event.key)) {
      const target = ROW_KEYS[event.key](tr);
      if (target) {
        event.preventDefault();
        target.focus();
      }
    }
  });
  fillRow(tr, run);
  return tr;
}

function setCurrentRow(tr) {
  const previous = state.currentRow;
  if (previous && previous !== tr) previous.tabIndex = -1;
  tr.tabIndex = 0;
  state.currentRow = tr;
}

/** Keep one row reachable with Tab (the first, unless another was focused). */
function ensureCurrentRow() {
  if (state.currentRow && state.currentRow.isConnected) return;
  const first = $("#rows").firstElementChild;
  state.currentRow = null;
  if (first) setCurrentRow(first);
}

function fillRow(tr, run) {
  const duration = durationText(run);
  tr.dataset.status = run.status;
  tr.replaceChildren(
    h("td", { class: "c-start" },
      h("time", { datetime: run.started_at, title: run.started_at, text: formatLocal(run.started_at) })),
    h("td", { class: "c-source", text: run.source }),
    h("td", { class: "c-ref", "data-label": "ref", title: run.source_ref || null, text: run.source_ref || "" }),
    h("td", { class: "c-status" }, statusPill(run.status)),
    h("td", { class: `c-duration num${OPEN.has(run.status) ? " elapsed" : ""}`, text: duration }),
    h("td", { class: "c-session", "data-label": "session", title: run.session_id || null, text: run.session_id || "" }),
    h("td", { class: "c-error", title: run.error_message || null, text: run.error_code || "" }),
  );
  tr.classList.toggle("unmatched", !matchesFilters(run));
  tr.title = tr.classList.contains("unmatched") ? "Changed since loaded: no longer matches the filters" : "";
}

function durationText(run) {
  if (OPEN.has(run.status)) return formatMs(elapsedMs(run));
  return formatMs(run.duration_ms);
}

/** The newer of two versions of one run: a run only moves forward. */
function newer(old, fresh) {
  const a = RANK[old.status] ?? 2;
  const b = RANK[fresh.status] ?? 2;
  if (a !== b) return b > a ? fresh : old;
  if (a === 2) return old; // terminal states never change
  return (isoToUs(fresh.updated_at) ?? 0) >= (isoToUs(old.updated_at) ?? 0) ? fresh : old;
}

function appendRows(runs) {
  const tbody = $("#rows");
  for (const run of runs) {
    const known = state.rows.get(run.id);
    if (known) {
      updateRow(run);
      continue;
    }
    const tr = buildRow(run);
    state.rows.set(run.id, { run, tr });
    tbody.append(tr);
  }
}

function updateRow(run) {
  const entry = state.rows.get(run.id);
  const best = newer(entry.run, run);
  if (best === entry.run && best !== run) return;
  entry.run = best;
  fillRow(entry.tr, best);
  if (state.detailsId === run.id) renderDetailsRun(best);
}

function insertRow(run) {
  const tr = buildRow(run);
  tr.classList.add("fresh");
  state.rows.set(run.id, { run, tr });
  const key = runKey(run);
  const tbody = $("#rows");
  for (const other of tbody.children) {
    const entry = state.rows.get(other.dataset.id);
    if (entry && compareKeys(key, runKey(entry.run)) > 0) {
      tbody.insertBefore(tr, other);
      return;
    }
  }
  tbody.append(tr);
}

/** Whether a run not loaded yet belongs to the loaded part of the list (else it will
 * come with "load more", and inserting it now would show it twice). */
function inLoadedRange(run) {
  if (state.nextCursor === null || state.oldestKey === null) return true;
  return compareKeys(runKey(run), state.oldestKey) > 0;
}

function applyChanges(runs) {
  for (const run of runs) {
    if (state.rows.has(run.id)) updateRow(run);
    else if (matchesFilters(run) && inLoadedRange(run)) insertRow(run);
  }
  updateCounts();
  if (runs.length) refreshReportSoon();
}

function updateCounts() {
  ensureCurrentRow();
  const n = state.rows.size;
  $("#empty").hidden = n > 0;
  $("#load-more").hidden = state.nextCursor === null;
  $("#count").textContent = n === 0 ? "" : `${n} run${n === 1 ? "" : "s"} shown${state.nextCursor === null ? " (all)" : ""}`;
}

function tickElapsed() {
  for (const { run, tr } of state.rows.values()) {
    if (!OPEN.has(run.status)) continue;
    const cell = tr.querySelector(".c-duration");
    if (cell) cell.textContent = durationText(run);
  }
  for (const dd of document.querySelectorAll("#summary dd[data-age-ms]")) {
    // the oldest open run keeps ageing between two reports
    const age = Number(dd.dataset.ageMs) + (Date.now() - Number(dd.dataset.at));
    dd.textContent = formatMs(age);
  }
  const live = document.querySelector("#details-body [data-elapsed]");
  if (live && state.detailsRun && OPEN.has(state.detailsRun.status)) {
    live.textContent = `${formatMs(elapsedMs(state.detailsRun))} (${state.detailsRun.status})`;
  }
}

async function reload() {
  const generation = ++state.generation;
  stopLive();
  writeURL();
  $("#runs").setAttribute("aria-busy", "true");
  let page;
  try {
    page = await getJSON("api/runs", [...filterParams(), ["limit", String(PAGE_SIZE)]]);
  } catch (err) {
    if (generation !== state.generation) return;
    showError(err);
    $("#runs").setAttribute("aria-busy", "false");
    if (err.transient && state.live) {
      // The server is away: try again while live is on (a filter error waits for the user).
      setLiveState("reconnecting", "retrying…");
      setTimeout(() => {
        if (generation === state.generation && state.live) reload();
      }, RETRY_MS);
    } else {
      setLiveState("error", "error");
    }
    return;
  }
  if (generation !== state.generation) return;
  showError(null);
  state.rows.clear();
  $("#rows").replaceChildren();
  state.nextCursor = page.next_cursor;
  state.changesCursor = page.changes_cursor ?? null;
  state.oldestKey = page.runs.length ? runKey(page.runs[page.runs.length - 1]) : null;
  appendRows(page.runs);
  updateCounts();
  setSynced();
  $("#runs").setAttribute("aria-busy", "false");
  startLive();
}

async function loadMore() {
  if (state.nextCursor === null) return;
  const generation = state.generation;
  const button = $("#load-more");
  button.disabled = true;
  try {
    const page = await getJSON("api/runs", [
      ...filterParams(),
      ["limit", String(PAGE_SIZE)],
      ["cursor", state.nextCursor],
    ]);
    if (generation !== state.generation) return;
    showError(null);
    state.nextCursor = page.next_cursor;
    if (page.runs.length) state.oldestKey = runKey(page.runs[page.runs.length - 1]);
    appendRows(page.runs);
    updateCounts();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

// -- live updates -----------------------------------------------------------------

function setLiveState(stateName, text) {
  const badge = $("#live-state");
  badge.dataset.state = stateName;
  badge.textContent = text || stateName;
}

function setSynced() {
  const now = new Date();
  const time = $("#last-synced");
  time.textContent = formatClock(now);
  time.dateTime = now.toISOString();
}

function liveAllowed() {
  return state.live && state.detailsId === null && state.changesCursor !== null;
}

function startLive() {
  stopLive();
  if (!state.live) return setLiveState("off", "off");
  if (state.detailsId !== null) return setLiveState("paused", "paused while details are open");
  if (state.changesCursor === null) return setLiveState("off", "no change feed");
  const generation = state.generation;
  const source = new EventSource(
    apiURL("api/runs/changes/stream", [["after", state.changesCursor]], { withToken: true }),
  );
  state.source = source;
  setLiveState("connecting", "connecting…");
  source.addEventListener("open", () => {
    if (state.source !== source) return;
    setLiveState("live", "live");
    setSynced();
  });
  source.addEventListener("runs", (event) => {
    if (state.source !== source || generation !== state.generation) return;
    const batch = JSON.parse(event.data);
    applyChanges(batch.runs || []);
    if (batch.cursor) state.changesCursor = batch.cursor;
    setSynced();
  });
  source.addEventListener("error", () => {
    if (state.source !== source) return;
    if (source.readyState === EventSource.CLOSED) {
      // The stream is gone for good (an old server, a proxy that refuses streams):
      // follow the same feed by polling.
      state.source = null;
      startPolling(generation);
    } else {
      setLiveState("reconnecting", "reconnecting…");
    }
  });
}

function startPolling(generation) {
  setLiveState("polling", "live (polling)");
  const poll = async () => {
    state.pollTimer = null;
    if (!liveAllowed() || generation !== state.generation) return;
    try {
      const batch = await getJSON("api/runs/changes", [["after", state.changesCursor]]);
      if (!liveAllowed() || generation !== state.generation) return;
      applyChanges(batch.runs || []);
      if (batch.cursor) state.changesCursor = batch.cursor;
      setSynced();
      setLiveState("polling", "live (polling)");
    } catch {
      setLiveState("reconnecting", "reconnecting…");
    }
    if (liveAllowed() && generation === state.generation) {
      state.pollTimer = setTimeout(poll, POLL_INTERVAL_MS);
    }
  };
  state.pollTimer = setTimeout(poll, 0);
}

function stopLive() {
  if (state.source) {
    state.source.close();
    state.source = null;
  }
  if (state.pollTimer !== null) {
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }
}

// -- the summary strip ------------------------------------------------------------

function refreshReportSoon() {
  if (state.reportTimer !== null) return;
  const wait = Math.max(0, state.lastReport + REPORT_MIN_INTERVAL_MS - Date.now());
  state.reportTimer = setTimeout(() => {
    state.reportTimer = null;
    loadReport();
  }, wait);
}

async function loadReport() {
  state.lastReport = Date.now();
  let report;
  try {
    report = await getJSON("api/report", [["since", REPORT_WINDOW]]);
  } catch {
    return; // the table shows API errors; the strip keeps its last figures
  }
  const strip = $("#summary");
  const sources = report.sources || [];
  const cards = sources.map((s) => {
    const byStatus = s.by_status || {};
    const finished = Object.entries(byStatus)
      .filter(([status]) => !OPEN.has(status))
      .reduce((sum, [, n]) => sum + n, 0);
    const successRate = finished ? (byStatus.success || 0) / finished : null;
    const hasOpen = s.oldest_open_age_s !== null && s.oldest_open_age_s !== undefined;
    const oldest = hasOpen ? formatMs(s.oldest_open_age_s * 1000) : "—";
    const selected = state.filters.source === s.source;
    return h("article", { class: `card${selected ? " selected" : ""}`, "data-source": s.source },
      h("h3", {},
        h("button", {
          type: "button", class: "link", text: s.source,
          title: selected ? "Show every source" : `Show only ${s.source} runs`,
          "aria-pressed": selected ? "true" : "false",
          onclick: () => setFilters({ ...state.filters, source: selected ? "" : s.source }),
        })),
      h("dl", {},
        stat("Started", String(s.started), "started"),
        stat("Success", formatRate(successRate), "success-rate"),
        stat("Open", String(s.open), "open"),
        stat("Hang rate", formatRate(s.hang_rate), "hang-rate"),
        stat("Oldest open", oldest, "oldest-open",
          hasOpen ? { "data-age-ms": String(s.oldest_open_age_s * 1000), "data-at": String(Date.now()) } : {})));
  });
  if (!cards.length) cards.push(h("p", { class: "muted", text: "No runs in the last 24 hours." }));
  strip.replaceChildren(h("h2", { class: "strip-title", text: "Last 24 hours, per source" }), ...cards);
  const list = $("#known-sources");
  list.replaceChildren(...sources.map((s) => h("option", { value: s.source })));
}

function stat(label, value, name, ddAttrs = {}) {
  return h("div", { class: "stat", "data-stat": name },
    h("dt", { text: label }), h("dd", { ...ddAttrs, text: value }));
}

// -- the details view -------------------------------------------------------------

function runLink(id, text) {
  const href = `${location.search}#run=${encodeURIComponent(id)}`;
  return h("a", { href, class: "run-link", "data-run": id, text: text || id });
}

async function openDetails(id, fromRow) {
  const dialog = $("#details");
  if (fromRow) state.detailsReturnFocus = fromRow;
  state.detailsId = id;
  state.detailsRun = null;
  stopLive();
  setLiveState("paused", "paused while details are open");
  writeURL();
  $("#details-title").textContent = "Run";
  $("#details-body").replaceChildren(h("p", { class: "muted", text: "Loading…" }));
  if (!dialog.open) dialog.showModal();
  let data;
  try {
    data = await getJSON(`api/runs/${encodeURIComponent(id)}`);
  } catch (err) {
    if (state.detailsId !== id) return;
    $("#details-body").replaceChildren(h("p", { class: "error", role: "alert", text: err.message }));
    return;
  }
  if (state.detailsId !== id) return;
  state.detailsChildren = data.children || [];
  renderDetailsRun(data.run);
}

function renderDetailsRun(run) {
  state.detailsRun = run;
  // the page's address names the filters and this run (never the token)
  $("#details-link").replaceChildren(copyButton("link", () => location.href, "Copy link"));
  $("#details-title").replaceChildren(
    document.createTextNode(`${run.source} run `), statusPill(run.status));
  const rows = [];
  const keys = [...FIELD_ORDER, ...Object.keys(run).filter((k) => !FIELD_ORDER.includes(k) && k !== "metadata")];
  for (const key of keys) {
    if (!Object.hasOwn(run, key)) continue;
    rows.push(detailRow(key, run));
  }
  const metadataText = JSON.stringify(run.metadata ?? {}, null, 2);
  const body = [
    h("dl", { class: "fields" }, rows),
    h("section", { class: "metadata" },
      h("div", { class: "section-head" },
        h("h3", { text: FIELD_LABELS.metadata }),
        copyButton("metadata", metadataText)),
      h("pre", { class: "json", "data-field": "metadata", tabindex: "0", text: metadataText })),
  ];
  const children = state.detailsChildren || [];
  body.push(h("section", { class: "children" },
    h("h3", { text: `Child runs (${children.length}${children.length >= 200 ? "+" : ""})` }),
    children.length
      ? h("ul", {}, children.map((c) => h("li", {},
        runLink(c.id, `${c.source}${c.source_ref ? ` · ${c.source_ref}` : ""}`), " ",
        statusPill(c.status), " ",
        h("span", { class: "muted", text: formatLocal(c.started_at) }))))
      : h("p", { class: "muted", text: "none" })));
  $("#details-body").replaceChildren(...body);
}

function detailRow(key, run) {
  const value = run[key];
  const label = FIELD_LABELS[key] || key;
  let shown;
  if (value === null || value === undefined || value === "") {
    shown = h("span", { class: "muted", text: "—" });
  } else if (key === "status") {
    shown = statusPill(value);
  } else if (key === "parent_id") {
    shown = runLink(value);
  } else if (key === "duration_ms") {
    shown = h("span", { text: `${formatMs(value)} (${value} ms)` });
  } else if (key === "first_item_ms") {
    shown = h("span", { text: `${formatMs(value)} (${value} ms)` });
  } else if (TIME_FIELDS.has(key)) {
    shown = h("time", { datetime: value, title: value, text: `${formatLocal(value)} (${value})` });
  } else if (typeof value === "object") {
    shown = h("code", { text: JSON.stringify(value) });
  } else {
    shown = h("span", { class: key === "error_message" ? "message" : "", text: String(value) });
  }
  if (key === "duration_ms" && (value === null || value === undefined) && OPEN.has(run.status)) {
    shown = h("span", { "data-elapsed": "", text: `${formatMs(elapsedMs(run))} (${run.status})` });
  }
  const dd = h("dd", { "data-field": key }, shown);
  if (COPYABLE.has(key) && value !== null && value !== undefined && value !== "") {
    dd.append(" ", copyButton(key, String(value)));
  }
  return h("div", { class: "field-row" }, h("dt", { text: label }), dd);
}

/** A button that copies ``text`` (or what ``text()`` gives at the click) and says so. */
function copyButton(name, text, caption = "Copy") {
  const label = `Copy ${FIELD_LABELS[name] ? FIELD_LABELS[name].toLowerCase() : name}`;
  const button = h("button", {
    type: "button", class: "copy secondary", "data-copy": name, "aria-label": label, text: caption,
  });
  let timer = null;
  button.addEventListener("click", async () => {
    const ok = await copyText(typeof text === "function" ? text() : text);
    button.textContent = ok ? "Copied" : "Copy failed";
    button.classList.toggle("copied", ok);
    $("#copy-status").textContent = ok ? `${label}: copied` : `${label}: failed`;
    clearTimeout(timer);
    timer = setTimeout(() => {
      button.textContent = caption;
      button.classList.remove("copied");
    }, 2000);
  });
  return button;
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // denied or unavailable: fall back below
    }
  }
  // Fallback for plain-http pages on another host: a selected off-screen textarea.
  const dialog = $("#details");
  const host = dialog.open ? dialog : document.body;
  const area = h("textarea", { class: "offscreen", readonly: true, "aria-hidden": "true" });
  area.value = text;
  host.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

function onDetailsClosed() {
  const returnTo = state.detailsReturnFocus;
  state.detailsId = null;
  state.detailsRun = null;
  state.detailsChildren = [];
  state.detailsReturnFocus = null;
  writeURL();
  if (returnTo && returnTo.isConnected) returnTo.focus();
  startLive();
}

// -- wiring -----------------------------------------------------------------------

function setFilters(filters) {
  state.filters = filters;
  fillForm();
  for (const card of document.querySelectorAll("#summary .card")) {
    card.classList.toggle("selected", card.dataset.source === filters.source);
  }
  reload();
  refreshReportSoon();
}

function buildStatusFilter() {
  const box = $("#status-filter");
  for (const status of Object.keys(STATUSES)) {
    box.append(h("label", { class: `chip st-${status}` },
      h("input", { type: "checkbox", name: "status", value: status }),
      h("span", { class: "dot", "aria-hidden": "true" }),
      STATUSES[status]));
  }
}

function wire() {
  const form = $("#filters");
  let debounce = null;
  const applyForm = () => {
    clearTimeout(debounce);
    debounce = null;
    const filters = readForm();
    if (textTooShort(filters)) {
      showError(SHORT_TEXT); // the table keeps the filters it was listed with
      return;
    }
    if (JSON.stringify(filters) !== JSON.stringify(state.filters)) setFilters(filters);
    else showError(null);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    applyForm();
  });
  form.addEventListener("reset", (event) => {
    event.preventDefault();
    setFilters(emptyFilters());
  });
  form.addEventListener("change", applyForm);
  form.addEventListener("input", (event) => {
    if (event.target.name === "status") return; // "change" applies checkboxes at once
    clearTimeout(debounce);
    debounce = setTimeout(applyForm, 400);
  });
  $("#load-more").addEventListener("click", loadMore);
  $("#live").addEventListener("change", (event) => {
    state.live = event.target.checked;
    if (state.live) startLive();
    else {
      stopLive();
      setLiveState("off", "off");
    }
  });
  const dialog = $("#details");
  $("#details-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", onDetailsClosed);
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a.run-link");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    openDetails(link.dataset.run, null);
  });
  window.addEventListener("hashchange", () => {
    const { runId } = readURL();
    if (runId && runId !== state.detailsId) openDetails(runId, null);
    else if (!runId && dialog.open) dialog.close();
  });
  window.addEventListener("popstate", () => {
    const { filters } = readURL();
    if (textTooShort(filters)) filters.text = "";
    if (JSON.stringify(filters) !== JSON.stringify(state.filters)) setFilters(filters);
  });
  setInterval(tickElapsed, 1000);
  setInterval(() => {
    if (state.live && !document.hidden) refreshReportSoon();
  }, 30000);
}

/** Whether the text filter is too short to search (empty is fine: no text filter). */
function textTooShort(filters) {
  const n = [...filters.text].length;
  return n > 0 && n < MIN_TEXT;
}

function main() {
  buildStatusFilter();
  const { filters, runId } = readURL();
  const short = textTooShort(filters);
  state.filters = short ? { ...filters, text: "" } : filters;
  fillForm();
  if (short) {
    $("#filters").elements.text.value = filters.text; // kept, not searched: say why
    showError(SHORT_TEXT);
  }
  wire();
  document.documentElement.dataset.panel = "ready";
  if (runId) openDetails(runId, null); // first, so the list loads with live paused
  reload();
  loadReport();
}

main();
