// Calls to the Dataspace API with the bearer token; errors become ApiError built from problem+json.
import { accessToken } from "./auth.js";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.code = problem.code || "";
    this.title = problem.title || "";
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}

export class SignedOut extends Error {}

// RFC 9470: the action needs a more recent sign-in (at most ``maxAge`` seconds old); refreshing cannot help.
export class StepUpRequired extends Error {
  constructor(maxAge) {
    super("a recent sign-in is required");
    this.maxAge = maxAge;
  }
}

function stepUpMaxAge(response) {
  const challenge = response.headers.get("WWW-Authenticate") || "";
  if (!challenge.includes('error="insufficient_user_authentication"')) return null;
  const found = /max_age="?(\d+)/.exec(challenge);
  return found ? Number(found[1]) : 0;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function apiResponse(path, { method = "GET", body, headers = {}, retries = 2 } = {}) {
  let refreshed = false;
  for (let attempt = 0; ; attempt++) {
    const token = await accessToken();
    if (!token) throw new SignedOut("signed out");
    const h = { Accept: "application/json", Authorization: "Bearer " + token, ...headers };
    const init = { method, headers: h };
    if (body !== undefined) {
      h["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, { title: "Network error", detail: "The server could not be reached.", code: "network" });
    }
    const maxAge = response.status === 401 ? stepUpMaxAge(response) : null;
    if (maxAge !== null) throw new StepUpRequired(maxAge);
    if (response.status === 401 && !refreshed) {
      refreshed = true;
      if (!(await accessToken({ force: true }))) throw new SignedOut("signed out");
      continue;
    }
    if ((response.status === 429 || response.status === 503) && attempt < retries) {
      const hinted = Number(response.headers.get("Retry-After"));
      await sleep(Number.isFinite(hinted) && hinted > 0 ? Math.min(hinted, 10) * 1000 : 500 * 2 ** attempt);
      continue;
    }
    if (!response.ok) {
      let problem = {};
      try { problem = await response.json(); } catch { problem = {}; }
      if (response.status === 401) throw new SignedOut("signed out");
      throw new ApiError(response.status, problem);
    }
    return response;
  }
}

export async function api(path, options = {}) {
  const response = await apiResponse(path, options);
  if (response.status === 204) return null;
  const text = await response.text();
  if (!text) return null;
  return (response.headers.get("content-type") || "").includes("json") ? JSON.parse(text) : text;
}

// Save a string or Blob as a file download.
export function saveFile(name, content, type = "application/json") {
  const blob = content instanceof Blob ? content : new Blob([content], { type });
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
