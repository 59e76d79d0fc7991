// Log in (/login) and sign up (/register). After either, back to ?next= (or home).

import { api, ApiProblem } from '../api.js';
import { h, charCount, safeNext } from '../dom.js';
import { t } from '../i18n.js';
import { session, limits } from '../state.js';
import { errorArea, field, busy } from '../components.js';

export async function render(root, ctx) {
  const registering = ctx.page === 'register';
  const next = safeNext(ctx.query.get('next'));
  const nextQuery = next !== '/' ? `?next=${encodeURIComponent(next)}` : '';
  const lim = limits();
  ctx.setTitle(registering ? t('auth.register.title') : t('auth.login.title'));

  const prefix = registering ? 'register' : 'login';
  const username = h('input', {
    id: `${prefix}-username`, name: 'username', type: 'text', autocomplete: 'username', required: true,
    minlength: 3, maxlength: 32, autocapitalize: 'none', spellcheck: 'false', dataset: { test: `${prefix}-username` },
  });
  const password = h('input', {
    id: `${prefix}-password`, name: 'password', type: 'password', required: true,
    autocomplete: registering ? 'new-password' : 'current-password',
    maxlength: lim.password_max_chars, minlength: registering ? lim.password_min_chars : null,
    dataset: { test: `${prefix}-password` },
  });
  const confirm = registering
    ? h('input', { id: 'register-password-confirm', name: 'confirm', type: 'password', required: true, autocomplete: 'new-password', maxlength: lim.password_max_chars, dataset: { test: 'register-password-confirm' } })
    : null;
  const error = errorArea(`${prefix}-error`);
  const submit = h('button', { type: 'submit', id: `${prefix}-submit`, class: 'btn btn-primary btn-block', dataset: { test: `${prefix}-submit` } }, registering ? t('auth.register.submit') : t('auth.login.submit'));

  const form = h(
    'form',
    { id: `${prefix}-form`, class: 'auth-form', novalidate: true, dataset: { test: `${prefix}-form` } },
    field(t('auth.username'), username, registering ? t('auth.username.hint') : null),
    field(t('auth.password'), password, registering ? t('auth.password.hint', { min: lim.password_min_chars }) : null),
    confirm ? field(t('auth.confirm'), confirm) : null,
    error.el,
    submit,
  );

  const switchLink = registering
    ? h('p', { class: 'auth-switch' }, t('auth.haveAccount'), ' ', h('a', { href: `/login${nextQuery}`, id: 'show-login', dataset: { test: 'show-login' } }, t('auth.login.link')))
    : h('p', { class: 'auth-switch' }, t('auth.noAccount'), ' ', h('a', { href: `/register${nextQuery}`, id: 'show-register', dataset: { test: 'show-register' } }, t('auth.register.link')));

  root.append(
    h(
      'section',
      { class: 'auth card' },
      h('h1', null, registering ? t('auth.register.title') : t('auth.login.title')),
      h('p', { class: 'lead' }, t('auth.tagline')),
      form,
      switchLink,
    ),
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.clear();
    const name = username.value.trim();
    const secret = password.value;
    if (!name) return fail(t('auth.error.username'), username);
    if (!secret) return fail(t('auth.error.password'), password);
    if (registering) {
      const n = charCount(secret);
      if (n < lim.password_min_chars) return fail(t('auth.error.short', { min: lim.password_min_chars }), password);
      if (n > lim.password_max_chars) return fail(t('auth.error.long', { max: lim.password_max_chars }), password);
      if (secret !== confirm.value) return fail(t('auth.error.mismatch'), confirm);
    }
    await busy(submit, async () => {
      try {
        if (registering) await api.post('/v1/auth/register', { username: name, password: secret });
        const login = await api.post('/v1/auth/login', { username: name, password: secret, cookie: true });
        session.user = login?.user ?? null;
        if (!session.user) {
          const me = await api.get('/v1/me');
          session.user = me.user;
        }
        ctx.navigate(next, { replace: true });
      } catch (problem) {
        if (problem?.name === 'AbortError') return;
        error.set(problem instanceof ApiProblem ? problem.message : String(problem));
        password.focus();
      }
    });
  });

  function fail(message, control) {
    error.set(message);
    control.focus();
  }

  username.focus();
}
