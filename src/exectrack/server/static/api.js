// exectrack runs panel: talking to the API. Every URL is relative to the mount root,
// the folder above this script (static/), so the panel works at "/" and under a prefix.

export const ROOT = new URL("../", import.meta.url);

// A token-protected server is opened once with ?token=...: the token moves to this
// tab's session storage and out of the address bar, so a link copied from the page
// (a deep link for a bug report) never carries it. API calls send it as a Bearer
// header; the event stream, which cannot send headers, as ?token=.
const TOKEN_KEY = "exectrack-token";
export const TOKEN = (() => {
  const given = new URLSearchParams(location.search).get("token");
  try {
    if (given) sessionStorage.setItem(TOKEN_KEY, given);
    return given || sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return given; // storage refused: keep it in the URL instead
  }
})();

export const TOKEN_IN_URL = (() => {
  try {
    return TOKEN !== null && sessionStorage.getItem(TOKEN_KEY) !== TOKEN;
  } catch {
    return TOKEN !== null;
  }
})();

export function apiURL(path, params = [], { withToken = false } = {}) {
  const url = new URL(path, ROOT);
  for (const [key, value] of params) url.searchParams.append(key, value);
  if (withToken && TOKEN) url.searchParams.set("token", TOKEN);
  return url;
}

export class ApiError extends Error {
  constructor(message, parameter, status = 0) {
    super(message);
    this.parameter = parameter;
    this.status = status; // 0: the server could not be reached
  }

  /** Worth trying again later (the server is away or failing), unlike a bad filter. */
  get transient() {
    return this.status === 0 || this.status >= 500;
  }
}

export async function getJSON(path, params = []) {
  let response;
  try {
    const headers = { Accept: "application/json" };
    if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
    response = await fetch(apiURL(path, params), { headers });
  } catch (err) {
    throw new ApiError(`cannot reach the server (${err.message})`, null);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = body && body.error;
    const message = error && error.message ? error.message : `HTTP ${response.status}`;
    throw new ApiError(message, error ? error.parameter : null, response.status);
  }
  return body;
}
