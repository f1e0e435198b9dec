// Tenants (platform admins): the list with a filter, create with the seed's fields (the database
// password is shown once), and the lifecycle (suspend, resume, delete, restore, purge) behind a
// confirmation.

import { get, post, del, t, can } from './api.js';
import { h, table, field, form, mount, act, confirm, toast, badge, statusKind, bytes, heading } from './ui.js';

const actions = (s) => {
  if (s === 'deleted-pending-purge') return ['restore', 'purge'];
  if (s === 'deleting') return [];
  return [s === 'suspended' ? 'resume' : 'suspend', 'delete'];
};

const warn = {
  suspend: (n) => `Suspend ${n}? Its logins and API access are refused until it is resumed; data is kept.`,
  resume: (n) => `Resume ${n}? Logins and API access work again.`,
  delete: (n) => `Delete ${n}? It is marked for purge after the retention period and can be restored until then.`,
  restore: (n) => `Restore ${n}? It comes back as it was before it was deleted.`,
  purge: (n) => `Purge ${n} for good? Its database, devices and backups are removed. This cannot be undone.`,
};

async function lifecycle(name, action, refresh) {
  if (!(await confirm(warn[action](name), action[0].toUpperCase() + action.slice(1)))) return;
  if (action === 'delete') await del(t(name));
  else await post(t(name, action));
  toast(`${name}: ${action} done`);
  await refresh();
}

function createForm(onCreated) {
  return form('Create tenant', [
    h('div', { class: 'grid' },
      field('Name', 'name', { required: true, pattern: '[a-z][a-z0-9_]{1,30}', autocapitalize: 'none', hint: 'lowercase letters, digits and _' }),
      field('Tier', 'tier', { type: 'select', options: [['free', 'Free'], ['premium', 'Premium'], ['enterprise', 'Enterprise']] }),
      field('Database quota', 'db_quota', { placeholder: 'e.g. 5GB', hint: 'empty: the tier default' }),
      field('Database', 'db_type', { type: 'select', options: [['postgres', 'PostgreSQL'], ['mssql', 'SQL Server']] }),
      field('Isolation', 'isolation', { type: 'select', options: [['', 'default'], ['schema', 'schema'], ['database', 'database']] }),
      field('Access', 'access_mode', { type: 'select', options: [['', 'default'], ['public', 'public'], ['vpn-only', 'VPN only'], ['hybrid', 'hybrid']] })),
    h('div', { class: 'row wrap' },
      field('VPN', 'vpn_enabled', { type: 'checkbox', checked: true }),
      field('Public API', 'public_api', { type: 'checkbox' }),
      field('DDL allowed', 'ddl_enabled', { type: 'checkbox' })),
  ], 'Create tenant', async (v, f) => {
    const body = { name: v.name, tier: v.tier, db_type: v.db_type, vpn_enabled: v.vpn_enabled, public_api: v.public_api, ddl_enabled: v.ddl_enabled };
    for (const k of ['db_quota', 'isolation', 'access_mode']) if (v[k]) body[k] = v[k];
    const created = await post('/api/v1/tenant', body);
    f.reset();
    onCreated(created);
  });
}

export async function tenants() {
  const list = h('div', {});
  const created = h('div', { 'aria-live': 'polite' });
  const filter = h('input', { id: 'tenant-filter', type: 'search', placeholder: 'name, status or tier' });
  let all = [];
  const draw = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = q ? all.filter((x) => `${x.name} ${x.status} ${x.tier}`.includes(q)) : all;
    mount(list, h('p', { class: 'muted small', elementtiming: 'tenant-list' }, `${rows.length} of ${all.length} tenants`), table('Tenants', [
      ['Name', (x) => h('a', { href: `#/t/${encodeURIComponent(x.name)}` }, x.name)],
      ['Status', (x) => badge(x.status, statusKind(x.status))],
      ['Tier', (x) => x.tier],
      ['Database', (x) => `${x.db_type} · ${bytes(x.db_quota_bytes)}`],
      ['Access', (x) => x.access_mode],
      ['Actions', (x) => h('div', { class: 'row wrap' }, can('lifecycle') ? actions(x.status).map((a) =>
        act(a, () => lifecycle(x.name, a, refresh), { class: a === 'purge' || a === 'delete' ? 'small danger' : 'small secondary', 'aria-label': `${a} ${x.name}` })) : [])],
    ], rows, 'No tenants.'));
  };
  const refresh = async () => { all = await get('/api/v1/tenants/summary'); performance.mark('tenants:received'); draw(); };
  filter.addEventListener('input', draw);
  await refresh();
  const onCreated = (c) => {
    mount(created, h('div', { class: 'card notice', role: 'status' },
      h('h2', {}, `Tenant ${c.name} created`),
      h('p', {}, 'Its database login is shown only now; store it safely.'),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Database user'), h('dd', {}, h('code', {}, c.db_user)),
        h('dt', {}, 'Password'), h('dd', {}, h('code', { class: 'secret' }, c.db_password))),
      h('p', {}, h('a', { href: `#/t/${encodeURIComponent(c.name)}` }, `Open ${c.name}`))));
    refresh();
  };
  return [
    heading('Tenants'),
    created,
    can('lifecycle') && h('details', { class: 'card' }, h('summary', {}, 'Create a tenant'), createForm(onCreated)),
    h('section', { class: 'card', 'aria-label': 'Tenant list' },
      h('div', { class: 'field' }, h('label', { for: 'tenant-filter' }, 'Filter'), filter), list),
  ];
}
