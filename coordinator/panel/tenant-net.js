// A tenant's network: VPN devices (add → QR code and wg-quick file), exposures with the
// public ↔ VPN-only switch, firewall rules and blocked domains.

import { get, post, del, t, can } from './api.js';
import { h, table, field, form, mount, act, confirm, toast, toggle, badge, ago, bytes } from './ui.js';

const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)));

// A WireGuard key pair made in this browser (X25519); the private key never leaves it.
async function keyPair() {
  if (!crypto.subtle) return null;
  try {
    const kp = await crypto.subtle.generateKey({ name: 'X25519' }, true, ['deriveBits']);
    const pub = await crypto.subtle.exportKey('raw', kp.publicKey);
    const pkcs8 = new Uint8Array(await crypto.subtle.exportKey('pkcs8', kp.privateKey));
    return { publicKey: b64(pub), privateKey: b64(pkcs8.slice(-32)) };
  } catch {
    return null;
  }
}

function saveFile(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function deviceConfig(tenant, device, privateKey) {
  const url = t(tenant, 'devices', device, 'config');
  const download = act('Download wg-quick file', async () => {
    const c = await get(url);
    let text = c.config;
    if (privateKey) text = text.replace(/^PrivateKey = .*$/m, `PrivateKey = ${privateKey}`);
    saveFile(`${device}.conf`, text);
  }, { class: 'secondary' });
  return h('div', { class: 'card notice', id: 'device-config' },
    h('h3', {}, `Configuration of ${device}`),
    h('img', { class: 'qr', src: `${url}?format=qr`, alt: `QR code of the WireGuard configuration of ${device}`, width: 256, height: 256 }),
    h('p', { class: 'small' }, privateKey
      ? 'The key pair was made in this browser. The QR code holds the file without the private key; the download has it. Keep the file safe: this page does not store it.'
      : 'The QR code and the file carry a placeholder for the device’s private key: put its own key in.'),
    download);
}

export async function devices(x) {
  const name = x.name;
  const list = await get(t(name, 'devices'));
  const shown = h('div', { 'aria-live': 'polite' });
  const canEdit = can('network', name);
  const rows = table('VPN devices', [
    ['Name', (d) => d.name],
    ['Address', (d) => d.address],
    ['State', (d) => badge(d.enabled ? d.state : 'disabled', d.enabled && d.state === 'active' ? 'ok' : 'warn')],
    ['Handshake', (d) => ago(d.peer && d.peer.last_handshake_ms)],
    ['Traffic', (d) => (d.peer ? `↓ ${bytes(d.peer.rx_bytes)} ↑ ${bytes(d.peer.tx_bytes)}` : '—')],
    ['', (d) => h('div', { class: 'row wrap' },
      act('QR code', async () => mount(shown, deviceConfig(name, d.name, null)), { class: 'small secondary', 'aria-label': `QR code of ${d.name}` }),
      canEdit && act('Remove', async () => {
        if (!(await confirm(`Remove device ${d.name}? It can no longer connect.`, 'Remove'))) return;
        await del(t(name, 'devices', d.name));
        toast(`${d.name} removed`);
        window.dispatchEvent(new Event('hashchange'));
      }, { class: 'small danger', 'aria-label': `Remove ${d.name}` }))],
  ], list, 'No devices yet.');
  const add = canEdit && form('Add device', [
    h('div', { class: 'grid' },
      field('Device name', 'name', { required: true, pattern: '[a-z0-9][a-z0-9_-]{0,31}', autocapitalize: 'none' }),
      field('Public key', 'public_key', { hint: 'from `wg pubkey` on the device; empty: make a key pair in this browser' }),
      field('Address', 'address', { hint: 'empty: the next free one' })),
  ], 'Add device', async (v, f) => {
    let pair = null;
    let key = v.public_key;
    if (!key) {
      pair = await keyPair();
      if (!pair) throw new Error('This browser cannot make WireGuard keys; paste the device’s public key.');
      key = pair.publicKey;
    }
    const body = { name: v.name, public_key: key };
    if (v.address) body.address = v.address;
    const d = await post(t(name, 'devices'), body);
    f.reset();
    toast(`${d.name} added with ${d.address}`);
    mount(shown, deviceConfig(name, d.name, pair && pair.privateKey));
  });
  return h('section', { class: 'card', 'aria-labelledby': 'dev-h' },
    h('h2', { id: 'dev-h' }, 'VPN devices'),
    x.vpn_enabled ? null : h('p', { class: 'notice' }, 'The VPN is off for this tenant.'),
    rows, add && h('h3', {}, 'Add a device'), add, shown);
}

export async function exposures(x) {
  const name = x.name;
  const [list, devs] = await Promise.all([get(t(name, 'exposures')), get(t(name, 'devices'))]);
  const canEdit = can('network', name);
  const section = h('section', { class: 'card', 'aria-labelledby': 'exp-h' });
  const redraw = () => window.dispatchEvent(new Event('hashchange'));
  mount(section,
    h('h2', { id: 'exp-h' }, 'Exposures'),
    h('p', { class: 'muted small' }, 'A service on a VPN device, reachable from the internet while public; VPN only when off.'),
    table('Exposures', [
      ['Device', (e) => e.device || e.device_id],
      ['Service', (e) => `${e.protocol}/${e.port}`],
      ['Public endpoint', (e) => e.endpoint || `port ${e.public_port}`],
      ['Allowed from', (e) => (e.allow.length ? e.allow.join(', ') : 'anywhere')],
      ['Public', (e) => (canEdit
        ? toggle(`Public access to ${e.device || e.device_id} ${e.protocol}/${e.port}`, e.enabled, async (on) => {
          await post(t(name, 'exposures', e.id, on ? 'enable' : 'disable'));
          toast(on ? 'Now public' : 'Now VPN only');
          redraw();
        })
        : badge(e.enabled ? 'public' : 'VPN only', e.enabled ? 'warn' : 'ok'))],
      ['', (e) => canEdit && act('Remove', async () => {
        if (!(await confirm(`Remove the exposure of ${e.device || e.device_id} ${e.protocol}/${e.port}?`, 'Remove'))) return;
        await del(t(name, 'exposures', e.id));
        redraw();
      }, { class: 'small danger', 'aria-label': `Remove exposure ${e.id}` })],
    ], list, 'Nothing is exposed.'),
    canEdit && devs.length > 0 && h('h3', {}, 'Expose a service'),
    canEdit && devs.length > 0 && form('Expose a service', [
      h('div', { class: 'grid' },
        field('Device', 'device', { type: 'select', options: devs.map((d) => [d.name]) }),
        field('Port', 'port', { type: 'number', min: 1, max: 65535, required: true }),
        field('Protocol', 'protocol', { type: 'select', options: [['tcp'], ['udp']] }),
        field('Allowed sources', 'allow', { hint: 'networks, comma separated; empty: anywhere' })),
    ], 'Expose', async (v) => {
      const body = { device: v.device, port: Number(v.port), protocol: v.protocol };
      if (v.allow) body.allow = v.allow.split(',').map((s) => s.trim()).filter(Boolean);
      await post(t(name, 'exposures'), body);
      redraw();
    }));
  return section;
}

export async function firewall(x) {
  const name = x.name;
  const [rules, domains] = await Promise.all([get(t(name, 'firewall', 'rule')), get(t(name, 'firewall', 'domains'))]);
  const canEdit = can('network', name);
  const redraw = () => window.dispatchEvent(new Event('hashchange'));
  const list = (v, labels) => [...v, ...Object.entries(labels || {}).map(([k, val]) => `label ${k}=${val}`)].join(', ') || 'any';
  return h('section', { class: 'card', 'aria-labelledby': 'fw-h' },
    h('h2', { id: 'fw-h' }, 'Firewall rules'),
    table('Firewall rules', [
      ['#', (r) => r.position],
      ['Verdict', (r) => badge(r.verdict, r.verdict === 'allow' ? 'ok' : 'bad')],
      ['From', (r) => (r.vpn_required ? 'VPN devices' : list(r.sources, r.source_labels))],
      ['To', (r) => list([...r.destinations, ...(r.devices || [])], r.destination_labels)],
      ['Ports', (r) => `${r.protocol}${r.ports ? `/${r.ports}` : ''}`],
      ['', (r) => canEdit && act('Remove', async () => {
        if (!(await confirm(`Remove rule ${r.position}?`, 'Remove'))) return;
        await del(t(name, 'firewall', 'rule', r.id));
        redraw();
      }, { class: 'small danger', 'aria-label': `Remove rule ${r.position}` })],
    ], rules, 'No rules: the tenant’s defaults apply.'),
    canEdit && h('h3', {}, 'Add a rule'),
    canEdit && form('Add a firewall rule', [
      h('div', { class: 'grid' },
        field('Verdict', 'verdict', { type: 'select', options: [['allow'], ['deny']] }),
        field('Sources', 'sources', { hint: 'networks, comma separated' }),
        field('Destinations', 'destinations', { hint: 'networks, comma separated' }),
        field('Protocol', 'protocol', { type: 'select', options: [['tcp'], ['udp'], ['any']] }),
        field('Ports', 'ports', { placeholder: '443 or 8000-8100' })),
    ], 'Add rule', async (v) => {
      const split = (s) => s.split(',').map((p) => p.trim()).filter(Boolean);
      const body = { verdict: v.verdict, protocol: v.protocol };
      if (v.sources) body.sources = split(v.sources);
      if (v.destinations) body.destinations = split(v.destinations);
      if (v.ports) body.ports = v.ports;
      await post(t(name, 'firewall', 'rule'), body);
      redraw();
    }),
    h('h2', {}, 'Blocked domains'),
    table('Blocked domains', [
      ['Domain', (d) => d],
      ['', (d) => canEdit && act('Unblock', async () => { await del(t(name, 'firewall', 'domains', d)); redraw(); }, { class: 'small secondary', 'aria-label': `Unblock ${d}` })],
    ], domains.map((d) => (typeof d === 'string' ? d : d.domain)), 'None blocked.'),
    canEdit && form('Block a domain', [field('Domain', 'domain', { required: true })], 'Block', async (v) => {
      await post(t(name, 'firewall', 'domains'), { domain: v.domain });
      redraw();
    }, { class: 'row wrap' }));
}
