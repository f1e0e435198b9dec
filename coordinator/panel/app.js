// The panel's shell: the session, the navigation by role, and a hash router over the pages
// (each page a module loaded when first opened, so the first page stays small).

import { session, loadSession, api, ApiError, dropPrefetched } from './api.js';
import { h, mount, errorText } from './ui.js';

const main = document.getElementById('main');

// #/path → [module, export]; first match wins. (boot.js, inline in the page, starts the first
// page's data and module for #/fleet and #/tenants before this module has loaded.)
const routes = [
  [/^\/signin$/, './signin.js', 'signin'],
  [/^\/fleet$/, './fleet.js', 'fleet'],
  [/^\/tenants$/, './tenants.js', 'tenants'],
  [/^\/t\/([^/]+)(?:\/([a-z-]+))?$/, './tenant.js', 'tenant'],
  [/^\/account$/, './account.js', 'account'],
];

function home() {
  const u = session.current && session.current.user;
  if (!u) return '#/signin';
  return u.tenant ? `#/t/${encodeURIComponent(u.tenant)}` : '#/fleet';
}

function nav() {
  const u = session.current && session.current.user;
  const links = [];
  if (u && !u.tenant) links.push(['#/fleet', 'Fleet'], ['#/tenants', 'Tenants']);
  if (u && u.tenant) links.push([`#/t/${encodeURIComponent(u.tenant)}`, u.tenant]);
  const here = location.hash || '#/';
  mount(document.getElementById('nav'), links.map(([href, text]) =>
    h('a', { href, 'aria-current': here === href || here.startsWith(`${href}/`) ? 'page' : undefined }, text)));
  const who = document.getElementById('who');
  if (!u) { mount(who); return; }
  mount(who,
    h('a', { href: '#/account', class: 'muted', 'aria-current': here === '#/account' ? 'page' : undefined, title: 'Your account' }, `${u.name} · ${u.role.replace('_', ' ')}`),
    h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'));
}

async function signOut() {
  try { await api('DELETE', '/api/v1/session'); } catch { /* signed out either way */ }
  session.current = null;
  location.hash = '#/signin';
  render();
}

export function denied(status, what) {
  const title = status === 403 ? '403 — Not allowed' : '404 — Not found';
  const text = status === 403 ? `You do not have access to ${what}.` : `There is no ${what}.`;
  return [h('h1', { tabindex: '-1', class: 'denied' }, title), h('p', {}, text), h('p', {}, h('a', { href: home() }, 'Back to your start page'))];
}

let generation = 0;
export async function render() {
  const mine = ++generation;
  const path = (location.hash || '#/').slice(1);
  if (!path.startsWith('/')) return; // an in-page anchor such as #main
  if (!session.current && path !== '/signin') {
    location.replace('#/signin');
    return render();
  }
  if (session.current && (path === '/' || path === '/signin')) {
    location.replace(home());
    return render();
  }
  nav();
  const route = routes.find(([re]) => re.test(path));
  if (!route) { mount(main, denied(404, 'such page')); return; }
  const [re, file, name] = route;
  const params = path.match(re).slice(1).map((p) => p && decodeURIComponent(p));
  try {
    const mod = await import(file);
    performance.mark('page:module');
    if (mine !== generation) return;
    const content = await mod[name](...params);
    if (mine !== generation) return;
    mount(main, content);
    performance.mark('page:shown'); // read by deploy/bench.sh panel
  } catch (e) {
    if (mine !== generation) return;
    if (e instanceof ApiError && (e.status === 403 || e.status === 404)) {
      mount(main, denied(e.status, params[0] ? `tenant “${params[0]}”` : 'this page'));
    } else if (e instanceof ApiError && e.status === 401) {
      location.replace('#/signin');
      return render();
    } else {
      mount(main, h('h1', { tabindex: '-1' }, 'Something went wrong'), h('p', { role: 'alert', class: 'error' }, errorText(e)));
    }
  }
  const h1 = main.querySelector('h1');
  if (h1 && document.activeElement && !main.contains(document.activeElement)) h1.focus({ preventScroll: true });
  document.title = `${h1 ? `${h1.textContent} · ` : ''}${document.getElementById('product').textContent}`;
}

document.getElementById('skip').addEventListener('click', (e) => { e.preventDefault(); main.focus(); });
window.addEventListener('hashchange', render);
window.addEventListener('signed-out', () => { location.hash = '#/signin'; render(); });
window.addEventListener('session', render);

(async () => {
  performance.mark('app:started');
  try { await loadSession(); performance.mark('session:known'); } catch (e) { mount(main, h('p', { role: 'alert', class: 'error' }, errorText(e))); return; }
  if (!session.current) dropPrefetched();
  render();
})();
