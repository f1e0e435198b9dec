// Sign-in: username and password, then the TOTP code when the account has one; a platform admin
// without one enrols here (secret shown as text and QR code, confirmed with a first code).

import { api, session, ApiError } from './api.js';
import { h, field, form, mount } from './ui.js';

function signedIn(answer) {
  session.current = answer;
  window.dispatchEvent(new Event('session'));
}

function qrImage(answer) {
  if (answer.otpauth_qr_svg) {
    const src = `data:image/svg+xml;base64,${btoa(answer.otpauth_qr_svg)}`;
    return h('img', { class: 'qr', src, alt: 'QR code of the authenticator secret', width: 220, height: 220 });
  }
  return null;
}

function enrol(box, answer) {
  const secret = answer.totp_secret.replace(/(.{4})/g, '$1 ').trim();
  mount(box,
    h('h1', { tabindex: '-1' }, 'Set up two-step sign-in'),
    h('p', {}, 'Scan the QR code with an authenticator app, or type the secret in, then enter the six-digit code it shows.'),
    qrImage(answer),
    h('p', {}, 'Secret: ', h('code', { id: 'totp-secret', class: 'secret' }, secret)),
    h('p', { class: 'muted small' }, h('a', { href: answer.otpauth_uri }, 'Open in an authenticator on this device')),
    form('Confirm two-step sign-in', [
      field('Code from the app', 'code', { inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: 6, required: true }),
    ], 'Confirm', async (v) => {
      signedIn(await api('POST', '/api/v1/session/totp', { code: v.code }));
    }));
  box.querySelector('h1').focus();
}

export function signin() {
  const box = h('section', { class: 'card narrow', 'aria-labelledby': 'signin-title' });
  const totp = field('Authenticator code', 'totp', { inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: 6 });
  totp.hidden = true;
  mount(box,
    h('h1', { id: 'signin-title', tabindex: '-1' }, 'Sign in'),
    form('Sign in', [
      field('Username', 'username', { autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' }),
      field('Password', 'password', { type: 'password', autocomplete: 'current-password', required: true }),
      totp,
    ], 'Sign in', async (v) => {
      const body = { username: v.username, password: v.password };
      if (v.totp) body.totp = v.totp;
      let answer;
      try {
        answer = await api('POST', '/api/v1/session', body, { quiet401: true });
      } catch (e) {
        if (e instanceof ApiError && e.status === 401 && (e.body.code || e.body.error) === 'totp_required' && totp.hidden) {
          totp.hidden = false;
          totp.querySelector('input').focus();
          return;
        }
        throw e;
      }
      if (answer.stage === 'enrol_totp') enrol(box, answer);
      else signedIn(answer);
    }));
  return box;
}
