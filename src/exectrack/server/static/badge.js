// <exectrack-badge source="chat" source-ref="" session-id="" base="http://127.0.0.1:8000/">
// The latest status of one scope (a source, optionally one source_ref and/or one
// session), refreshed every `interval` seconds (default 10). Every badge of a page
// that shares a base is fetched in one request (api/badges). A base on another origin
// (no CORS there, on purpose) shows the server's SVG badge as an image instead.
// Optional attributes: interval, token (sent as ?token=). No inline style or script:
// works under the panel's Content-Security-Policy. Text is set as text, never HTML.
(() => {
  "use strict";

  // One colour and label per status: the same table as exectrack/server/_badges.py.
  const STATUS_COLOURS = {
    queued: "#6b7280",
    running: "#2563eb",
    success: "#15803d",
    error: "#b91c1c",
    canceled: "#b45309",
    timeout: "#7e22ce",
  };
  const NO_RUNS = ["no runs", "#6b7280"];
  const UNAVAILABLE = ["unavailable", "#6b7280"];
  const DEFAULT_INTERVAL = 10;
  const SCRIPT_BASE = document.currentScript
    ? new URL("..", document.currentScript.src).href
    : document.baseURI;

  const scopeOf = (el) => {
    const source = el.getAttribute("source") || "";
    const ref = el.getAttribute("source-ref") || "";
    const session = el.getAttribute("session-id") || "";
    if (session) return `${source}:${ref}:${session}`;
    if (ref) return `${source}:${ref}`;
    return source;
  };

  const baseOf = (el) => new URL(el.getAttribute("base") || SCRIPT_BASE, document.baseURI).href;

  // Badges waiting for the next batch, by base URL.
  const pending = new Map();
  let timer = null;

  function schedule(el) {
    const base = baseOf(el);
    if (!pending.has(base)) pending.set(base, new Set());
    pending.get(base).add(el);
    if (timer === null) timer = setTimeout(flush, 0);
  }

  async function flush() {
    timer = null;
    const batches = [...pending.entries()];
    pending.clear();
    for (const [base, els] of batches) {
      const badges = [...els].filter((el) => el.isConnected);
      if (badges.length === 0) continue;
      const url = new URL("api/badges", base);
      for (const scope of new Set(badges.map(scopeOf))) url.searchParams.append("scope", scope);
      const token = badges[0].getAttribute("token");
      if (token) url.searchParams.set("token", token);
      let byScope = null;
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" } });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const body = await response.json();
        byScope = new Map(body.badges.map((b) => [b.scope, b]));
      } catch (err) {
        for (const el of badges) el.show(UNAVAILABLE[0], UNAVAILABLE[1], String(err));
        continue;
      }
      for (const el of badges) {
        const found = byScope.get(scopeOf(el));
        if (!found || found.status === null) {
          el.show(NO_RUNS[0], NO_RUNS[1], "");
        } else {
          const colour = STATUS_COLOURS[found.status] || NO_RUNS[1];
          el.show(found.status, colour, `${found.run_id} started ${found.started_at}`);
        }
      }
    }
  }

  class ExectrackBadge extends HTMLElement {
    static get observedAttributes() {
      return ["source", "source-ref", "session-id", "base", "interval", "token"];
    }

    connectedCallback() {
      if (!this.shadowRoot) {
        const root = this.attachShadow({ mode: "open" });
        this.label = document.createElement("span");
        this.message = document.createElement("span");
        this.image = document.createElement("img");
        for (const part of [this.label, this.message]) {
          part.style.display = "inline-block";
          part.style.padding = "1px 6px";
          part.style.color = "#fff";
          part.style.font = "11px Verdana, DejaVu Sans, sans-serif";
        }
        this.label.style.background = "#555";
        this.label.style.borderRadius = "3px 0 0 3px";
        this.message.style.borderRadius = "0 3px 3px 0";
        this.image.hidden = true;
        this.message.setAttribute("role", "status");
        root.append(this.label, this.message, this.image);
      }
      this.refresh();
      this.restartTimer();
    }

    disconnectedCallback() {
      clearInterval(this.timerId);
      this.timerId = null;
    }

    attributeChangedCallback() {
      if (this.isConnected && this.shadowRoot) {
        this.refresh();
        this.restartTimer();
      }
    }

    restartTimer() {
      clearInterval(this.timerId);
      const seconds = Number(this.getAttribute("interval")) || DEFAULT_INTERVAL;
      this.timerId = setInterval(() => this.refresh(), Math.max(1, seconds) * 1000);
    }

    refresh() {
      const base = baseOf(this);
      if (new URL(base).origin === window.location.origin) {
        schedule(this);
        return;
      }
      // Another origin: an <img> needs no CORS.
      const url = new URL(`badge/${encodeURIComponent(this.getAttribute("source") || "")}.svg`, base);
      const ref = this.getAttribute("source-ref");
      const session = this.getAttribute("session-id");
      const token = this.getAttribute("token");
      if (ref) url.searchParams.set("source_ref", ref);
      if (session) url.searchParams.set("session_id", session);
      if (token) url.searchParams.set("token", token);
      url.searchParams.set("t", String(Date.now()));
      this.label.hidden = true;
      this.message.hidden = true;
      this.image.hidden = false;
      this.image.alt = `${scopeOf(this)} status`;
      this.image.src = url.href;
    }

    show(status, colour, title) {
      const ref = this.getAttribute("source-ref");
      this.label.textContent = ref || this.getAttribute("source") || "";
      this.message.textContent = status;
      this.message.style.background = colour;
      this.dataset.status = status;
      this.title = title;
      this.label.hidden = false;
      this.message.hidden = false;
      this.image.hidden = true;
    }
  }

  if (!customElements.get("exectrack-badge")) {
    customElements.define("exectrack-badge", ExectrackBadge);
  }
})();
