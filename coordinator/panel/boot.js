// Inlined at the top of index.html (its hash is in the page's Content-Security-Policy) so it runs
// as soon as the page starts to be read, before any stylesheet or module: it asks for the session
// and the first page's data, and preloads that page's module. api.js takes the answers (each
// once, within 5 s).
(() => {
  const pages = {
    '#/tenants': ['tenants.js', ['/api/v1/tenants/summary']],
    '#/fleet': ['fleet.js', ['/api/v1/cluster', '/api/v1/nodes', '/api/v1/tenants/summary']],
  };
  const early = new Map();
  const ask = (path) => {
    const answer = fetch(path, { headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' });
    answer.catch(() => {}); // its taker sees the error
    early.set(path, answer);
  };
  ask('/api/v1/session');
  const page = pages[location.hash];
  if (page) {
    page[1].forEach(ask);
    const link = document.createElement('link');
    link.rel = 'modulepreload';
    link.href = document.currentScript.dataset.assets + page[0];
    document.head.append(link);
  }
  window.panelEarly = { at: Date.now(), early };
})();
