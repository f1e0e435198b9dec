// DOM helpers: elements built with textContent only (never HTML from data), tables, forms, the
// confirmation dialog, messages and formatting.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export const nextId = (p = 'f') => `${p}${++uid}`;

// Rows a table draws at a time: drawing thousands (the tenant list at 1,000 tenants) costs the
// browser hundreds of milliseconds of layout, so longer tables get a pager; filters above a table
// still search every row. 50 rows fill two screens, and half as many nodes as 100 to style,
// lay out and paint before the first page shows.
const PAGE = 50;

// A table with a caption (for screen readers) and one row per item; `empty` when there are none.
export function table(caption, cols, rows, empty = 'None yet.') {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  const row = (r) => h('tr', {}, cols.map(([label, cell]) => h('td', { 'data-label': label }, cell(r))));
  const body = h('tbody', {});
  const scroll = h('div', { class: 'scroll' },
    h('table', {},
      h('caption', { class: 'sr' }, caption),
      h('thead', {}, h('tr', {}, cols.map(([label]) => h('th', { scope: 'col' }, label)))),
      body));
  if (rows.length <= PAGE) {
    mount(body, rows.map(row));
    return scroll;
  }
  let at = 0;
  const status = h('span', { 'aria-live': 'polite' });
  const prev = h('button', { type: 'button', class: 'small secondary', onclick: () => { at -= PAGE; show(); } }, 'Previous');
  const next = h('button', { type: 'button', class: 'small secondary', onclick: () => { at += PAGE; show(); } }, 'Next');
  const show = () => {
    mount(body, rows.slice(at, at + PAGE).map(row));
    status.textContent = `Rows ${at + 1}–${Math.min(at + PAGE, rows.length)} of ${rows.length}`;
    prev.disabled = at === 0;
    next.disabled = at + PAGE >= rows.length;
  };
  show();
  return h('div', {}, scroll, h('nav', { class: 'row pager', 'aria-label': `${caption}: pages` }, prev, status, next));
}

// One labelled input; `type` 'select' takes options [[value, text]].
export function field(label, name, opts = {}) {
  const id = nextId();
  const { type = 'text', options, hint, ...rest } = opts;
  let input;
  if (type === 'select') {
    input = h('select', { id, name, ...rest }, options.map(([v, text]) => h('option', { value: v }, text ?? v)));
  } else if (type === 'checkbox') {
    input = h('input', { id, name, type, ...rest });
    return h('div', { class: 'field check' }, input, h('label', { for: id }, label));
  } else {
    input = h('input', { id, name, type, ...rest });
  }
  const hintId = hint ? `${id}-hint` : undefined;
  if (hintId) input.setAttribute('aria-describedby', hintId);
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint && h('small', { id: hintId }, hint));
}

// A form whose submit runs `action(values)`; errors show in the form, the button is busy meanwhile.
export function form(label, fields, submit, action, extra = {}) {
  const err = h('p', { class: 'error', role: 'alert', hidden: true });
  const button = h('button', { type: 'submit' }, submit);
  const f = h('form', { 'aria-label': label, class: extra.class || 'stack', novalidate: extra.novalidate },
    fields, err, h('div', { class: 'row' }, button));
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    const values = {};
    for (const el of f.elements) {
      if (!el.name) continue;
      values[el.name] = el.type === 'checkbox' ? el.checked : el.value.trim();
    }
    button.disabled = true;
    try {
      await action(values, f);
    } catch (e) {
      err.textContent = errorText(e);
      err.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  return f;
}

export function errorText(e) {
  if (e && e.status === 429) return `Too many attempts; try again later. ${e.message}`;
  return (e && e.message) || String(e);
}

// Asks before a change that is hard to undo; resolves true when confirmed.
export function confirm(text, ok = 'Confirm') {
  const d = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = ok;
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.returnValue = '';
    d.showModal();
    document.getElementById('confirm-cancel').focus();
  });
}

let toastTimer;
export function toast(text) {
  const el = document.getElementById('toast');
  el.textContent = text;
  el.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove('show'), 4000);
}

// A button that runs `action` and reports its error as a message.
export function act(label, action, attrs = {}) {
  return h('button', {
    type: 'button', ...attrs,
    onclick: async (ev) => {
      const b = ev.currentTarget;
      b.disabled = true;
      try { await action(); } catch (e) { toast(errorText(e)); } finally { b.disabled = false; }
    },
  }, label);
}

// An on/off switch (button role=switch) showing `on`; `change(next)` returns when done.
export function toggle(label, on, change) {
  const b = h('button', { type: 'button', role: 'switch', class: 'switch', 'aria-checked': on ? 'true' : 'false', 'aria-label': label });
  b.append(h('span', { 'aria-hidden': 'true' }, on ? 'On' : 'Off'));
  b.addEventListener('click', async () => {
    b.disabled = true;
    try { await change(!on); } catch (e) { toast(errorText(e)); } finally { b.disabled = false; }
  });
  return b;
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function time(ms) {
  if (!ms) return '—';
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}

export function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function badge(text, kind = '') {
  return h('span', { class: `badge ${kind}` }, text);
}

export const statusKind = (s) => ({ active: 'ok', provisioning: 'warn', suspended: 'bad', deleting: 'bad', 'deleted-pending-purge': 'bad', 'quota-exceeded': 'bad' })[s] || '';

export function heading(text, ...rest) {
  return h('div', { class: 'head' }, h('h1', { tabindex: '-1' }, text), ...rest);
}
