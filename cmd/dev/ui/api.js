// The session (a token the dev server minted, as Supabase Auth would issue it) and calls to
// the same HTTP API the customer's real portal calls.

const store = window.sessionStorage;

export const session = {
  get token() { return store.getItem("pf.token"); },
  get user() { return JSON.parse(store.getItem("pf.user") || "null"); },
  get tenantId() { return store.getItem("pf.tenant"); },
  set tenantId(id) { store.setItem("pf.tenant", id); },
  signIn(token, user) {
    store.setItem("pf.token", token);
    store.setItem("pf.user", JSON.stringify(user));
    store.setItem("pf.tenant", user.memberships[0].tenant_id);
  },
  signOut() {
    store.removeItem("pf.token");
    store.removeItem("pf.user");
    store.removeItem("pf.tenant");
  },
  // membership is the user's role and tenant name in the selected tenant.
  get membership() {
    const u = this.user;
    if (!u) return null;
    return u.memberships.find((m) => m.tenant_id === this.tenantId) || u.memberships[0];
  },
};

// Result of a call: status, ok, and the decoded body (a problem+json on errors).
export async function call(path, { method = "GET", body, headers = {}, auth = true } = {}) {
  const h = { Accept: "application/json", ...headers };
  if (auth && session.token) {
    h.Authorization = `Bearer ${session.token}`;
    // Only a user in several tenants has to name one; sending it always is harmless.
    if (session.tenantId) h["X-Tenant-Id"] = session.tenantId;
  }
  let payload;
  if (body !== undefined) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, { method, headers: h, body: payload, credentials: "same-origin" });
  } catch {
    return { status: 0, ok: false, data: { detail: "The server could not be reached. Is make dev still running?" } };
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { detail: text }; }
  }
  return { status: res.status, ok: res.ok, data };
}

// problemText is the sentence to show for a failed call.
export function problemText(r) {
  const d = r.data || {};
  const what = d.detail || d.title || `The request failed (HTTP ${r.status}).`;
  return d.request_id ? `${what} (request ${d.request_id})` : what;
}
