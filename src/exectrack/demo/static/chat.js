"use strict";
// The demo page: send a message, show the streamed answer, list the latest runs.
// Every value from the server is set as text, never as HTML.
const session = "browser-" + Math.random().toString(16).slice(2, 10);

async function send(event) {
  event.preventDefault();
  const out = document.getElementById("answer");
  out.textContent = "";
  const message = document.getElementById("message").value;
  const response = await fetch("/api/chat", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ message: message, session_id: session }),
  });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    out.textContent += decoder.decode(value, { stream: true });
  }
  refresh();
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "-" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
}

async function refresh() {
  const response = await fetch("/api/recent");
  const data = await response.json();
  const body = document.getElementById("runs");
  body.replaceChildren();
  for (const run of data.runs) {
    const row = document.createElement("tr");
    cell(row, run.started_at);
    cell(row, run.source);
    cell(row, run.source_ref);
    cell(row, run.status, "status-" + run.status);
    cell(row, run.error_code);
    body.appendChild(row);
  }
}

document.getElementById("chat").addEventListener("submit", send);
refresh();
setInterval(refresh, 2000);
