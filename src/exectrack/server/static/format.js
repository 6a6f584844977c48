// exectrack runs panel: pure helpers (elements from text, times, durations, statuses).

// One label per status (colours live in panel.css as .st-<status>, from the same table
// as the server's badges). Order is the lifecycle's.
export const STATUSES = {
  queued: "queued",
  running: "running",
  success: "success",
  error: "error",
  canceled: "canceled",
  timeout: "timeout",
};

export const OPEN = new Set(["queued", "running"]);

/** Build an element; string children become text nodes (never HTML). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (typeof value === "function") node.addEventListener(key.replace(/^on/, ""), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Microseconds since the epoch from the API's ISO time (exact; Date keeps only ms). */
export function isoToUs(iso) {
  if (!iso) return null;
  const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(iso);
  if (!match) {
    const ms = Date.parse(iso);
    return Number.isNaN(ms) ? null : ms * 1000;
  }
  const ms = Date.parse(match[1] + match[3]);
  const frac = (match[2] || "").padEnd(6, "0").slice(0, 6);
  return ms * 1000 + Number(frac);
}

export function runKey(run) {
  return [isoToUs(run.started_at), run.id];
}

/** Newest first: > 0 when a comes before b. */
export function compareKeys(a, b) {
  if (a[0] !== b[0]) return a[0] > b[0] ? 1 : -1;
  if (a[1] === b[1]) return 0;
  return a[1] > b[1] ? 1 : -1;
}

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

export function formatLocal(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

export function formatClock(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export function formatMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 10) return `${ms.toFixed(ms < 1 ? 2 : 1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${pad(Math.floor(s % 60))} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} m`;
  return `${Math.floor(s / 86400)} d ${pad(Math.floor((s % 86400) / 3600))} h`;
}

export function formatRate(rate) {
  if (rate === null || rate === undefined) return "—";
  return `${(rate * 100).toFixed(rate === 0 || rate === 1 ? 0 : 1)} %`;
}

export function elapsedMs(run) {
  const started = isoToUs(run.started_at);
  return started === null ? null : Math.max(0, Date.now() - started / 1000);
}

export function statusPill(status) {
  const known = Object.hasOwn(STATUSES, status);
  return h("span", {
    class: `status st-${known ? status : "unknown"}`,
    text: known ? STATUSES[status] : String(status),
  });
}

/** A filter time (ISO, naive = UTC, or an age like 24h) in ms since the epoch. */
export function parseFilterTime(text, now) {
  const age = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$/.exec(text.trim().toLowerCase());
  if (age) {
    const unit = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[age[2]];
    return now - Number(age[1]) * unit * 1000;
  }
  let iso = text.trim();
  if (/[T ]\d\d:\d\d/.test(iso) && !/(Z|z|[+-]\d\d:?\d\d)$/.test(iso)) iso += "Z";
  const ms = Date.parse(iso.replace(" ", "T"));
  return Number.isNaN(ms) ? null : ms;
}
