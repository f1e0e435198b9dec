// Fleet overview (platform admins): the coordinator cluster, and every node with its roles,
// health and how far behind the tenants placed on it it is.

import { get } from './api.js';
import { h, table, badge, ago, bytes, heading } from './ui.js';

const STALE_MS = 30000;

export async function fleet() {
  const [cluster, nodes, tenants] = await Promise.all([
    get('/api/v1/cluster'), get('/api/v1/nodes'), get('/api/v1/tenants/summary'),
  ]);
  // Revision lag: tenants placed on a node whose last report is older than the tenant's revision.
  const behind = new Map();
  for (const t of tenants) {
    for (const node of t.lagging_nodes) behind.set(node, (behind.get(node) || 0) + 1);
  }
  const placed = new Map();
  for (const t of tenants) {
    for (const n of [t.placement.db_node, t.placement.gateway_node]) {
      if (n !== null && n !== undefined) placed.set(n, (placed.get(n) || 0) + 1);
    }
  }
  const health = (n) => {
    if (n.revoked) return badge('revoked', 'bad');
    if (n.cordoned) return badge('cordoned', 'warn');
    if (!n.last_seen_ms || Date.now() - n.last_seen_ms > STALE_MS) return badge('unreachable', 'bad');
    return badge('healthy', 'ok');
  };
  const leader = cluster.leader_id;
  return [
    heading('Fleet'),
    h('section', { class: 'card', 'aria-labelledby': 'cluster-h' },
      h('h2', { id: 'cluster-h' }, 'Coordinators'),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Cluster'), h('dd', {}, cluster.cluster_id || '—'),
        h('dt', {}, 'Leader'), h('dd', {}, leader ? `coordinator ${leader}` : badge('no leader', 'bad')),
        h('dt', {}, 'Term'), h('dd', {}, cluster.term),
        h('dt', {}, 'Applied'), h('dd', {}, cluster.last_applied ?? '—'),
        h('dt', {}, 'Tenants'), h('dd', {}, cluster.tenants),
        h('dt', {}, 'VPN pool'), h('dd', {}, cluster.vpn_pool || '—')),
      table('Coordinators', [
        ['ID', (m) => m.id],
        ['Role', (m) => (m.id === leader ? badge('leader', 'ok') : m.voter ? 'voter' : 'learner')],
        ['API', (m) => m.api_addr],
        ['Raft', (m) => m.raft_addr],
      ], cluster.members)),
    h('section', { class: 'card', 'aria-labelledby': 'nodes-h' },
      h('h2', { id: 'nodes-h' }, 'Nodes'),
      table('Nodes', [
        ['ID', (n) => n.id],
        ['Roles', (n) => [...n.roles].join(', ') || '—'],
        ['Address', (n) => n.address],
        ['Health', health],
        ['Last seen', (n) => ago(n.last_seen_ms)],
        ['Tenants', (n) => placed.get(n.id) || 0],
        ['Revision lag', (n) => {
          const b = behind.get(n.id) || 0;
          return b ? badge(`${b} tenant${b > 1 ? 's' : ''} behind`, 'warn') : badge('up to date', 'ok');
        }],
        ['Capacity', (n) => `${n.capacity.cpus} CPU · ${bytes(n.capacity.memory_bytes)} · ${bytes(n.capacity.disk_bytes)} disk`],
      ], nodes, 'No nodes have joined yet.')),
  ];
}
