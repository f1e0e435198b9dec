// One tenant's pages, as tabs: database (quota gauge, sessions), VPN devices, exposures,
// firewall, backups, usage and invoices, audit. What the role cannot change is not offered; the
// API refuses it anyway (another tenant's page is a 403 from the API, shown as such).

import { get, t, can } from './api.js';
import { h, badge, statusKind, bytes, time } from './ui.js';

const TABS = [
  ['database', 'Database', null],
  ['devices', 'VPN devices', './tenant-net.js'],
  ['exposures', 'Exposures', './tenant-net.js'],
  ['firewall', 'Firewall', './tenant-net.js'],
  ['backups', 'Backups', './tenant-ops.js'],
  ['usage', 'Usage & invoices', './tenant-ops.js'],
  ['audit', 'Audit log', './tenant-ops.js'],
];

function meter(label, value, max, text) {
  const id = `m-${label.replace(/\W+/g, '-').toLowerCase()}`;
  return h('div', { class: 'gauge' },
    h('label', { for: id }, label),
    h('meter', { id, min: 0, max: Math.max(max, 1), value: Math.min(value, Math.max(max, 1)), low: max * 0.8, high: max * 0.95, optimum: 0 }),
    h('span', { class: 'small' }, text));
}

function database(x) {
  const st = x.placement.db_node !== null && x.placement.db_node !== undefined ? x.node_status[x.placement.db_node] : null;
  const used = st ? st.db_bytes : 0;
  const sessions = st ? st.connections : 0;
  return h('section', { class: 'card', 'aria-labelledby': 'db-h' },
    h('h2', { id: 'db-h' }, 'Database'),
    h('div', { class: 'grid' },
      meter('Disk quota', used, x.db_quota_bytes, `${bytes(used)} of ${bytes(x.db_quota_bytes)}${st && st.quota_exceeded ? ' — over quota: reads and deletes only' : ''}`),
      meter('Sessions', sessions, x.connection_limit, `${sessions} of ${x.connection_limit} connections`)),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Engine'), h('dd', {}, `${x.db_type} (${x.isolation} isolation)`),
      h('dt', {}, 'Database user'), h('dd', {}, h('code', {}, `tenant_${x.name}_user`)),
      h('dt', {}, 'Access'), h('dd', {}, x.access_mode),
      h('dt', {}, 'DDL'), h('dd', {}, x.ddl_enabled ? 'allowed' : 'not allowed'),
      h('dt', {}, 'Node'), h('dd', {}, x.placement.db_node ?? 'not placed yet'),
      h('dt', {}, 'Ready'), h('dd', {}, st ? (st.ready ? badge('ready', 'ok') : badge(st.reason || 'not ready', 'warn')) : '—'),
      h('dt', {}, 'VPN subnet'), h('dd', {}, x.vpn_enabled ? x.network.vpn_subnet : 'VPN off'),
      h('dt', {}, 'Created'), h('dd', {}, time(x.created_at_ms))));
}

export async function tenant(name, tab = 'database') {
  const x = await get(t(name));
  const current = TABS.find(([id]) => id === tab) || TABS[0];
  let body;
  if (current[2]) {
    const mod = await import(current[2]);
    body = await mod[current[0]](x);
  } else {
    body = database(x);
  }
  const base = `#/t/${encodeURIComponent(name)}`;
  return [
    h('div', { class: 'head' },
      h('h1', { tabindex: '-1' }, x.name),
      badge(x.status, statusKind(x.status)),
      h('span', { class: 'muted' }, `${x.tier} tier`),
      !can('network', name) && badge('read only', '')),
    x.status_reason && h('p', { class: 'notice' }, x.status_reason),
    h('nav', { class: 'tabs', 'aria-label': `${x.name} sections` },
      TABS.map(([id, label]) => h('a', { href: id === 'database' ? base : `${base}/${id}`, 'aria-current': id === current[0] ? 'page' : undefined }, label))),
    body,
  ];
}
