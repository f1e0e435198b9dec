// A tenant's operations: backups with restore at a time (clone or overwrite; the page follows a run
// or restore under way), usage by day with invoices, and the audit log with filters and the chain check.

import { get, post, t, can, session } from './api.js';
import { h, table, field, form, mount, act, confirm, toast, badge, bytes, time } from './ui.js';

const redraw = () => window.dispatchEvent(new Event('hashchange'));

export async function backups(x) {
  const name = x.name;
  const b = await get(t(name, 'backups'));
  const owner = can('owner', name);
  const outcome = (o) => (o ? h('span', {}, badge(o.ok ? 'ok' : 'failed', o.ok ? 'ok' : 'bad'), ` ${time(o.at_ms)}${o.reason ? ` — ${o.reason}` : ''}${o.made ? ` — made ${o.made}` : ''}`) : '—');
  const local = new Date(Date.now() - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  // While a backup or restore is under way the page looks again every few seconds (while shown).
  if (b.run || b.restore) {
    const here = location.hash;
    setTimeout(() => { if (location.hash === here && document.getElementById('bk-h')) redraw(); }, 3000);
  }
  return h('section', { class: 'card', 'aria-labelledby': 'bk-h' },
    h('h2', { id: 'bk-h' }, 'Backups'),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Policy'), h('dd', {}, `every ${Math.round(b.policy.interval_s / 60)} min, keep ${b.policy.keep_count} or ${b.policy.keep_days} days`),
      h('dt', {}, 'Last backup run'), h('dd', { id: 'last-run' }, b.run ? badge('running', 'warn') : outcome(b.last_run)),
      h('dt', {}, 'Last restore'), h('dd', { id: 'last-restore' }, b.restore ? badge('restoring', 'warn') : outcome(b.last_restore)),
      b.last_failure && h('dt', {}, 'Last failure'), b.last_failure && h('dd', {}, `${b.last_failure.at}: ${b.last_failure.reason}`)),
    owner && h('div', { class: 'row' },
      act('Back up now', async () => { await post(t(name, 'backups')); toast('Backup asked for'); redraw(); }),
      act('Refresh', async () => redraw(), { class: 'secondary' })),
    table('Backups', [
      ['Taken', (e) => e.taken_at],
      ['Size', (e) => bytes(e.bytes)],
      ['Dumped', (e) => bytes(e.dumped)],
      ['Node', (e) => e.node_id],
      ['', (e) => (e.expiring ? badge('expiring', 'warn') : '')],
    ], [...b.backups].reverse(), 'No backups yet.'),
    owner && b.backups.length > 0 && h('h3', {}, 'Restore to a point in time'),
    owner && b.backups.length > 0 && form('Restore a backup', [
      h('div', { class: 'grid' },
        field('Restore to (your local time)', 'at', { type: 'datetime-local', step: 1, value: local, required: true, hint: 'the newest backup at or before this time is used' }),
        field('How', 'mode', { type: 'select', options: [['clone', 'Into a new schema beside the live one (clone)'], ['overwrite', 'Over the live data (overwrite; the old is kept aside)']] })),
    ], 'Restore', async (v) => {
      const at = new Date(v.at).getTime();
      if (!Number.isFinite(at)) throw new Error('Pick a date and time.');
      const what = v.mode === 'overwrite' ? `Overwrite ${name}'s live data with its backup at or before ${time(at)}?` : `Restore ${name}'s backup at or before ${time(at)} into a clone schema?`;
      if (!(await confirm(what, 'Restore'))) return;
      await post(t(name, 'backups', 'restore'), { at_ms: at, mode: v.mode });
      toast('Restore asked for');
      redraw();
    }));
}

function bars(days, pick, label) {
  const max = Math.max(1, ...days.map(pick));
  const w = 12;
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${Math.max(days.length, 1) * w} 60`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  days.forEach((d, i) => {
    const v = pick(d);
    const r = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
    const ht = Math.max(v ? 1 : 0, (v / max) * 56);
    r.setAttribute('x', i * w + 1);
    r.setAttribute('y', 60 - ht);
    r.setAttribute('width', w - 2);
    r.setAttribute('height', ht);
    const tt = document.createElementNS('http://www.w3.org/2000/svg', 'title');
    tt.textContent = `${d.date}: ${v}`;
    r.append(tt);
    svg.append(r);
  });
  return svg;
}

export async function usage(x, period) {
  const name = x.name;
  const month = period || new Date().toISOString().slice(0, 7);
  const [u, invoices] = await Promise.all([
    get(`${t(name, 'usage')}?period=${encodeURIComponent(month)}`),
    get(t(name, 'invoices')).catch((e) => (e.status === 403 ? null : Promise.reject(e))),
  ]);
  const out = h('div', {});
  const tot = u.totals;
  const picker = h('input', { id: 'period', type: 'month', value: month });
  picker.addEventListener('change', async () => mount(out, await usage(x, picker.value)));
  const canBill = session.current && session.current.user.role === 'platform_admin';
  mount(out,
    h('section', { class: 'card', 'aria-labelledby': 'use-h' },
      h('h2', { id: 'use-h' }, 'Usage'),
      h('div', { class: 'field' }, h('label', { for: 'period' }, 'Month'), picker),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Disk, peak'), h('dd', {}, bytes(tot.disk_max_bytes)),
        h('dt', {}, 'Disk, GB-hours'), h('dd', {}, (tot.disk_byte_hours / 1e9).toFixed(2)),
        h('dt', {}, 'Peak sessions'), h('dd', {}, tot.peak_connections),
        h('dt', {}, 'Realtime events'), h('dd', {}, tot.events),
        h('dt', {}, 'VPN traffic'), h('dd', {}, `↓ ${bytes(tot.vpn_rx_bytes)} ↑ ${bytes(tot.vpn_tx_bytes)}`),
        h('dt', {}, 'API calls'), h('dd', {}, tot.api_calls)),
      h('h3', {}, 'API calls per day'), bars(u.days, (d) => d.api_calls, `API calls per day in ${u.period}`),
      h('h3', {}, 'Peak disk per day'), bars(u.days, (d) => d.disk_max_bytes, `Peak disk bytes per day in ${u.period}`)),
    invoices && h('section', { class: 'card', 'aria-labelledby': 'inv-h' },
      h('h2', { id: 'inv-h' }, 'Invoices'),
      table('Invoices', [
        ['Number', (i) => i.id],
        ['Month', (i) => i.period],
        ['Status', (i) => badge(i.status, i.status === 'paid' ? 'ok' : i.status === 'overdue' ? 'bad' : '')],
        ['Total', (i) => `${i.total} ${i.currency}`],
        ['Due', (i) => time(i.due_at_ms)],
        ['', (i) => canBill && h('div', { class: 'row wrap' },
          i.status === 'draft' && act('Issue', async () => { await post(t(name, 'invoices', i.id, 'issue')); redraw(); }, { class: 'small secondary' }),
          (i.status === 'issued' || i.status === 'overdue') && act('Mark paid', async () => { await post(t(name, 'invoices', i.id, 'mark-paid')); redraw(); }, { class: 'small secondary' }))],
      ], [...invoices].reverse(), 'No invoices yet.'),
      canBill && form('Create an invoice', [field('Month', 'period', { type: 'month', value: month, required: true })], 'Create invoice', async (v) => {
        await post(t(name, 'invoices'), { period: v.period });
        redraw();
      }, { class: 'row wrap' })));
  return out;
}

export async function audit(x) {
  const name = x.name;
  const platform = session.current && session.current.user.role === 'platform_admin';
  const out = h('div', {});
  const load = async (f = {}) => {
    const q = new URLSearchParams({ limit: '200' });
    let entries;
    if (platform) {
      q.set('tenant', name);
      if (f.since) q.set('since', f.since);
      entries = await get(`/api/v1/audit?${q}`);
    } else {
      entries = await get(`${t(name, 'audit')}?${q}`);
    }
    const text = (f.text || '').toLowerCase();
    const rows = entries.filter((e) => (!text || `${e.action} ${e.actor} ${e.target}`.toLowerCase().includes(text))
      && (!f.outcome || e.outcome === f.outcome));
    return table('Audit entries', [
      ['#', (e) => e.seq],
      ['Time', (e) => time(e.time_ms)],
      ['Actor', (e) => e.actor],
      ['Action', (e) => e.action],
      ['Target', (e) => e.target],
      ['Outcome', (e) => badge(e.outcome, e.outcome === 'ok' ? 'ok' : 'bad')],
    ], rows, 'No entries match.');
  };
  const results = h('div', { 'aria-live': 'polite' }, await load());
  const verified = h('p', { 'aria-live': 'polite' });
  mount(out, h('section', { class: 'card', 'aria-labelledby': 'aud-h' },
    h('h2', { id: 'aud-h' }, 'Audit log'),
    form('Filter the audit log', [h('div', { class: 'grid' },
      field('Action, actor or target contains', 'text'),
      field('Outcome', 'outcome', { type: 'select', options: [['', 'any'], ['ok'], ['rejected']] }),
      platform && field('Since', 'since', { placeholder: '1h, 7d or RFC 3339' }))],
    'Filter', async (v) => mount(results, await load(v)), { class: 'stack' }),
    platform && h('div', { class: 'row' }, act('Verify the chain', async () => {
      const r = await get('/api/v1/audit/verify');
      verified.textContent = r.ok ? `The chain is intact: ${r.verified} of ${r.total} entries verified.` : `Broken at entry ${r.broken.seq}: ${r.broken.reason}`;
      verified.className = r.ok ? 'ok-text' : 'error';
    }, { class: 'secondary' })), verified, results));
  return out;
}
