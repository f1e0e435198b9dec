// The REST API from the panel: same-origin fetch with the session cookie, the CSRF token on
// every change, errors as ApiError (status + the API's error body).

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

// The signed-in answer of /api/v1/session (user, csrf_token, expires_at), or null.
export const session = { current: null };

const enc = encodeURIComponent;
export const t = (tenant, ...rest) => ['/api/v1/tenant', enc(tenant), ...rest.map(enc)].join('/');

export async function api(method, path, body, opts = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session.current) headers['X-CSRF-Token'] = session.current.csrf_token;
  const res = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return answer(res, opts);
}

// The data of a response, or an ApiError; a 401 while signed in signs the panel out.
async function answer(res, opts = {}) {
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text.slice(0, 200) }; }
  if (!res.ok) {
    if (res.status === 401 && !opts.quiet401 && session.current) {
      session.current = null;
      window.dispatchEvent(new Event('signed-out'));
    }
    throw new ApiError(res.status, data);
  }
  return opts.withHeaders ? { data, headers: res.headers } : data;
}

// The GETs the page's inline boot script (boot.js) sent before any module loaded: the session and
// the first page's data. `get` takes each one once, within a few seconds, or else asks again; all
// are dropped when there is no session.
const boot = window.panelEarly;
const early = new Map(boot ? [...boot.early].map(([path, res]) => [path, { res, at: boot.at }]) : []);
export const dropPrefetched = () => early.clear();

export const get = async (path, opts) => {
  const got = early.get(path);
  early.delete(path);
  if (got && Date.now() - got.at < 5000) return answer(await got.res, opts);
  return api('GET', path, undefined, opts);
};
export const post = (path, body) => api('POST', path, body === undefined ? {} : body);
export const del = (path) => api('DELETE', path);

export async function loadSession() {
  try {
    session.current = await get('/api/v1/session', { quiet401: true });
  } catch (e) {
    session.current = null;
    if (!(e instanceof ApiError) || (e.status !== 401 && e.status !== 404)) throw e;
  }
  return session.current;
}

// What the signed-in user's role lets it do (the API enforces the same; the panel hides the rest).
export function can(what, tenant) {
  const u = session.current && session.current.user;
  if (!u) return false;
  if (u.role === 'platform_admin') return true;
  if (tenant !== undefined && u.tenant !== tenant) return false;
  const rank = { member: 0, admin: 1, owner: 2 }[u.role] ?? -1;
  switch (what) {
    case 'read': return rank >= 0;
    case 'network': return rank >= 1; // devices, device tokens, exposures, firewall
    case 'owner': return rank >= 2; // users, backups, invoices
    default: return false; // fleet, tenant lifecycle: platform admins only
  }
}
