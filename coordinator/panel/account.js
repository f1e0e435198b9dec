// The signed-in user's own account: who it is, and a new password (the current one first). The
// change ends every other session of the user; this one goes on with the answer's new token.

import { api, session } from './api.js';
import { h, field, form, heading, toast } from './ui.js';

export function account() {
  const u = session.current.user;
  const done = h('p', { class: 'ok-text', role: 'status', hidden: true });
  return h('div', {},
    heading('Your account'),
    h('section', { class: 'card', 'aria-labelledby': 'acct-h' },
      h('h2', { id: 'acct-h' }, u.name),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Role'), h('dd', {}, u.role.replace('_', ' ')),
        u.tenant && h('dt', {}, 'Tenant'), u.tenant && h('dd', {}, u.tenant))),
    h('section', { class: 'card narrow', 'aria-labelledby': 'pw-h' },
      h('h2', { id: 'pw-h' }, 'Change your password'),
      h('p', { class: 'muted small' }, 'At least 12 characters, 5 of them different, without your user name. Your other sessions are signed out.'),
      form('Change your password', [
        field('Current password', 'current_password', { type: 'password', autocomplete: 'current-password', required: true }),
        field('New password', 'new_password', { type: 'password', autocomplete: 'new-password', minlength: 12, maxlength: 256, required: true }),
        field('New password again', 'confirm_password', { type: 'password', autocomplete: 'new-password', required: true }),
      ], 'Change password', async (v, f) => {
        done.hidden = true;
        if (v.new_password !== v.confirm_password) throw new Error('The two new passwords differ.');
        session.current = await api('POST', '/api/v1/session/password', { current_password: v.current_password, new_password: v.new_password });
        f.reset();
        done.textContent = 'Password changed. Your other sessions are signed out.';
        done.hidden = false;
        toast('Password changed');
      }), done));
}
