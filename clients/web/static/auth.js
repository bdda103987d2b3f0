// Sign-in with OAuth 2 authorization code + PKCE (S256 via WebCrypto), done by the page itself.
// Tokens live in sessionStorage (gone when the tab closes), never in localStorage.

const SESSION = "dataspace.session";
const PENDING = "dataspace.pkce";
const RESUME = "dataspace.resume";

function b64url(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(n) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

export async function pkceChallenge(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return b64url(digest);
}

export function currentSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION) || "null");
    return s && s.access_token ? s : null;
  } catch {
    return null;
  }
}

function store(body, clientId) {
  const s = {
    access_token: body.access_token,
    refresh_token: body.refresh_token || null,
    expires_at: Date.now() + (Number(body.expires_in) || 300) * 1000,
    client_id: clientId,
  };
  sessionStorage.setItem(SESSION, JSON.stringify(s));
  return s;
}

export function redirectUri() {
  return location.origin + location.pathname.replace(/[^/]*$/, "");
}

// Sign in (leaves the page). ``prompt``/``maxAge`` ask for a fresh sign-in (RFC 9470 step-up); ``resume`` is
// kept in this tab and handed back by takeResume() after the sign-in, so the page can retry what needed it.
export async function signIn(clientId, scope, { prompt, maxAge, resume } = {}) {
  if (resume) sessionStorage.setItem(RESUME, JSON.stringify(resume));
  const verifier = randomString(48);
  const state = randomString(16);
  const redirect = redirectUri();
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, redirect, clientId }));
  const params = new URLSearchParams({
    response_type: "code",
    client_id: clientId,
    redirect_uri: redirect,
    state,
    code_challenge: await pkceChallenge(verifier),
    code_challenge_method: "S256",
  });
  if (scope) params.set("scope", scope);
  if (prompt) params.set("prompt", prompt);
  if (maxAge !== undefined && maxAge !== null) params.set("max_age", String(maxAge));
  params.set("ui_locales", document.documentElement.lang || "en");  // OIDC: the sign-in page speaks our language
  location.assign("/oauth/authorize?" + params.toString());
}

async function tokenRequest(form) {
  const response = await fetch("/oauth/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
    body: new URLSearchParams(form).toString(),
  });
  let body = {};
  try { body = await response.json(); } catch { body = {}; }
  if (!response.ok || !body.access_token) {
    const err = new Error(body.error_description || body.error || "sign-in failed");
    err.code = body.error || "token_error";
    throw err;
  }
  return body;
}

// What signIn(..., { resume }) asked to do after the sign-in (once), or null.
export function takeResume() {
  const raw = sessionStorage.getItem(RESUME);
  sessionStorage.removeItem(RESUME);
  try { return JSON.parse(raw || "null"); } catch { return null; }
}

// Finish a sign-in if the URL carries ?code=...&state=... (or ?error=...). Returns the session or null.
export async function completeSignIn() {
  const query = new URLSearchParams(location.search);
  if (!query.has("code") && !query.has("error")) return currentSession();
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", location.pathname);
  if (query.has("error")) {
    const err = new Error(query.get("error_description") || query.get("error"));
    err.code = query.get("error");
    throw err;
  }
  if (!pending || pending.state !== query.get("state")) {
    const err = new Error("The sign-in answer does not match this browser tab; please sign in again.");
    err.code = "invalid_state";
    throw err;
  }
  const body = await tokenRequest({
    grant_type: "authorization_code",
    code: query.get("code"),
    redirect_uri: pending.redirect,
    client_id: pending.clientId,
    code_verifier: pending.verifier,
  });
  return store(body, pending.clientId);
}

// A fresh access token, refreshing it when it is about to expire. Null when signed out.
export async function accessToken({ force = false } = {}) {
  const s = currentSession();
  if (!s) return null;
  if (!force && s.expires_at - Date.now() > 30000) return s.access_token;
  if (!s.refresh_token) return force ? null : s.access_token;
  try {
    const body = await tokenRequest({ grant_type: "refresh_token", refresh_token: s.refresh_token, client_id: s.client_id });
    return store(body, s.client_id).access_token;
  } catch {
    sessionStorage.removeItem(SESSION);
    return null;
  }
}

export async function signOut() {
  const s = currentSession();
  sessionStorage.removeItem(SESSION);
  if (s && (s.refresh_token || s.access_token)) {
    try {
      await fetch("/oauth/revoke", {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ token: s.refresh_token || s.access_token, client_id: s.client_id }).toString(),
      });
    } catch { /* signing out locally is enough */ }
  }
}
