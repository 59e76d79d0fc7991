// Settings: your picture, profile (bio, preferred language, group rounds, memory budgets),
// password, API keys, usage, log out everywhere, delete account.

import { api, ApiProblem } from '../api.js';
import { h, clear, charCount, formatDateTime, formatNumber } from '../dom.js';
import { t } from '../i18n.js';
import { session, limits } from '../state.js';
import { confirmDialog, errorArea, statusArea, field, busy, lengthCounter, copyText, emptyState } from '../components.js';
import { avatarEditor, myPictureUrl } from '../avatar.js';

const BUDGET_MIN = 50;
const BUDGET_MAX = 5000;

export async function render(root, ctx) {
  ctx.setTitle(t('settings.title'));
  const lim = limits();
  const [{ user }, keys, usage, picture] = await Promise.all([
    api.get('/v1/me', { signal: ctx.signal }),
    api.get('/v1/api-keys', { signal: ctx.signal }),
    api.get('/v1/me/usage?days=30', { signal: ctx.signal }).catch((problem) => {
      if (problem?.name === 'AbortError') throw problem;
      return null;
    }),
    myPictureUrl(ctx.signal).catch((problem) => {
      if (problem?.name === 'AbortError') throw problem;
      return null;
    }),
  ]);
  session.user = user;

  root.append(
    h('div', { class: 'page-head' }, h('h1', null, t('settings.title')), h('p', { class: 'muted' }, t('settings.signedInAs', { name: user.username }))),
    h('div', { class: 'settings-grid' }, pictureCard(user, picture, ctx), profileForm(user, lim, ctx), passwordForm(lim), apiKeys(keys.items || [], lim, ctx), usageCard(usage), sessionsCard(ctx, lim)),
  );
}

/** The user's own picture (`/v1/me/avatar`), with the same controls as a character's. */
function pictureCard(user, url, ctx) {
  const error = errorArea('my-avatar-error');
  const editor = avatarEditor({
    path: '/v1/me/avatar',
    url,
    name: user.username,
    prefix: 'my-avatar',
    error,
    alt: t('avatar.mine.alt'),
    label: t('avatar.mine.none'),
    ctx,
  });
  return h('section', { class: 'card', id: 'my-picture', dataset: { test: 'my-picture' } }, h('h2', null, t('settings.picture')), editor.el, error.el, editor.status.el);
}

function profileForm(user, lim, ctx) {
  const bio = h('textarea', { id: 'settings-bio', rows: 3, maxlength: lim.bio_chars, value: user.bio || '', dataset: { test: 'settings-bio' } });
  const bioCounter = lengthCounter(bio, lim.bio_chars, 'settings-bio-count');
  const language = h(
    'select',
    { id: 'settings-language', dataset: { test: 'settings-language' } },
    ['zh', 'en'].map((code) => h('option', { value: code, selected: user.language === code }, t(`lang.${code}`))),
  );
  const rounds = h('input', { id: 'settings-max-rounds', type: 'number', min: 1, max: 10, step: 1, required: true, value: String(user.max_group_rounds), dataset: { test: 'settings-max-rounds' } });
  const budget = (key, id) => h('input', { id, type: 'number', min: BUDGET_MIN, max: BUDGET_MAX, step: 1, required: true, value: String(user.memory_budgets?.[key] ?? ''), dataset: { test: id } });
  const session = budget('session', 'settings-budget-session');
  const shortTerm = budget('short_term', 'settings-budget-short');
  const longTerm = budget('long_term', 'settings-budget-long');
  const error = errorArea('settings-error');
  const status = statusArea('settings-status');
  const save = h('button', { type: 'submit', id: 'settings-save', class: 'btn btn-primary', dataset: { test: 'settings-save' } }, t('common.save'));
  const form = h(
    'form',
    { id: 'settings-form', class: 'card form', novalidate: true, dataset: { test: 'settings-form' } },
    h('h2', null, t('settings.profile')),
    field(t('settings.bio'), bio, t('settings.bio.hint')),
    h('p', { class: 'counter-line' }, bioCounter.el),
    field(t('settings.language'), language, t('settings.language.hint')),
    field(t('settings.rounds'), rounds, t('settings.rounds.hint')),
    h(
      'fieldset',
      { class: 'fieldset' },
      h('legend', null, t('settings.budgets')),
      h('p', { class: 'hint' }, t('settings.budgets.hint', { min: BUDGET_MIN, max: BUDGET_MAX })),
      h('div', { class: 'field-row' }, field(t('settings.budget.session'), session), field(t('settings.budget.short'), shortTerm), field(t('settings.budget.long'), longTerm)),
    ),
    error.el,
    status.el,
    h('div', { class: 'form-actions' }, save),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    error.clear();
    if (charCount(bio.value.trim()) > lim.bio_chars) return error.set(t('settings.error.bio', { max: lim.bio_chars }));
    const roundsValue = Number(rounds.value);
    if (!Number.isInteger(roundsValue) || roundsValue < 1 || roundsValue > 10) return error.set(t('settings.error.rounds'));
    const budgets = {};
    for (const [key, control] of [['session', session], ['short_term', shortTerm], ['long_term', longTerm]]) {
      const value = Number(control.value);
      if (!Number.isInteger(value) || value < BUDGET_MIN || value > BUDGET_MAX) {
        control.focus();
        return error.set(t('settings.error.budget', { min: BUDGET_MIN, max: BUDGET_MAX }));
      }
      budgets[key] = value;
    }
    busy(save, async () => {
      try {
        const answer = await api.patch('/v1/me', { bio: bio.value.trim(), language: language.value, max_group_rounds: roundsValue, memory_budgets: budgets });
        Object.assign(ctxUser(), answer.user);
        ctx.refreshShell();
        status.set(t('common.saved'));
      } catch (problem) {
        if (problem?.name !== 'AbortError') error.set(problem.message);
      }
    });
  });
  return form;
}

/** A username field password managers (and Chrome) expect beside a password; not shown. */
function hiddenUsername() {
  return h('input', { type: 'text', name: 'username', autocomplete: 'username', value: session.user?.username || '', readonly: true, tabindex: '-1', 'aria-hidden': 'true', class: 'visually-hidden' });
}

function ctxUser() {
  if (!session.user) session.user = {};
  return session.user;
}

function passwordForm(lim) {
  const current = h('input', { id: 'password-current', type: 'password', autocomplete: 'current-password', required: true, maxlength: lim.password_max_chars, dataset: { test: 'password-current' } });
  const next = h('input', { id: 'password-new', type: 'password', autocomplete: 'new-password', required: true, minlength: lim.password_min_chars, maxlength: lim.password_max_chars, dataset: { test: 'password-new' } });
  const confirm = h('input', { id: 'password-confirm', type: 'password', autocomplete: 'new-password', required: true, maxlength: lim.password_max_chars, dataset: { test: 'password-confirm' } });
  const error = errorArea('password-error');
  const status = statusArea('password-status');
  const save = h('button', { type: 'submit', id: 'password-save', class: 'btn btn-primary', dataset: { test: 'password-save' } }, t('settings.password.save'));
  const form = h(
    'form',
    { id: 'password-form', class: 'card form', novalidate: true, dataset: { test: 'password-form' } },
    h('h2', null, t('settings.password')),
    // A hidden username helps password managers file the new password under the right account.
    hiddenUsername(),
    field(t('settings.password.current'), current),
    field(t('settings.password.new'), next, t('auth.password.hint', { min: lim.password_min_chars })),
    field(t('settings.password.confirm'), confirm),
    h('p', { class: 'hint' }, t('settings.password.note')),
    error.el,
    status.el,
    h('div', { class: 'form-actions' }, save),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    error.clear();
    if (!current.value) return error.set(t('settings.password.error.current'));
    const n = charCount(next.value);
    if (n < lim.password_min_chars) return error.set(t('auth.error.short', { min: lim.password_min_chars }));
    if (n > lim.password_max_chars) return error.set(t('auth.error.long', { max: lim.password_max_chars }));
    if (next.value !== confirm.value) return error.set(t('auth.error.mismatch'));
    busy(save, async () => {
      try {
        await api.post('/v1/auth/password', { current_password: current.value, new_password: next.value });
        form.reset();
        status.set(t('settings.password.changed'));
      } catch (problem) {
        if (problem?.name !== 'AbortError') error.set(problem.message);
      }
    });
  });
  return form;
}

function apiKeys(items, lim, ctx) {
  const list = h('ul', { id: 'api-key-list', class: 'key-list', dataset: { test: 'api-key-list' } });
  const name = h('input', { id: 'api-key-name', type: 'text', maxlength: lim.name_chars, required: true, autocomplete: 'off', dataset: { test: 'api-key-name' } });
  const create = h('button', { type: 'submit', id: 'api-key-create', class: 'btn btn-primary', dataset: { test: 'api-key-create' } }, t('keys.create'));
  const secretBox = h('div', { id: 'api-key-secret-box', class: 'secret-box', hidden: true, dataset: { test: 'api-key-secret-box' } });
  const error = errorArea('api-key-error');
  const status = statusArea('api-key-status');

  function renderList() {
    if (!items.length) {
      clear(list, h('li', null, emptyState(t('keys.empty'))));
      return;
    }
    clear(
      list,
      items.map((key) => {
        const revoked = Boolean(key.revoked_at);
        const revoke = revoked
          ? null
          : h('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', dataset: { test: 'api-key-revoke', id: key.id }, 'aria-label': t('keys.revoke.aria', { name: key.name }) }, t('keys.revoke'));
        revoke?.addEventListener('click', async () => {
          const confirmed = await confirmDialog({ title: t('keys.revoke.title', { name: key.name }), message: t('keys.revoke.body'), confirmLabel: t('keys.revoke'), danger: true });
          if (!confirmed || !ctx.active) return;
          try {
            await api.delete(`/v1/api-keys/${encodeURIComponent(key.id)}`);
            key.revoked_at = new Date().toISOString();
            renderList();
            status.set(t('keys.revoked'));
          } catch (problem) {
            if (problem instanceof ApiProblem && problem.status === 404) {
              items.splice(items.indexOf(key), 1);
              renderList();
            } else if (problem?.name !== 'AbortError') error.set(problem.message);
          }
        });
        return h(
          'li',
          { class: ['key-item', revoked ? 'revoked' : null], dataset: { test: 'api-key-item', id: key.id, revoked: String(revoked) } },
          h(
            'div',
            null,
            h('strong', null, key.name),
            ' ',
            h('code', null, `${key.prefix}…`),
            h(
              'p',
              { class: 'muted small' },
              t('keys.created', { when: formatDateTime(key.created_at) }),
              ' · ',
              key.last_used_at ? t('keys.lastUsed', { when: formatDateTime(key.last_used_at) }) : t('keys.neverUsed'),
              revoked ? ` · ${t('keys.revokedAt', { when: formatDateTime(key.revoked_at) })}` : '',
            ),
          ),
          revoke,
        );
      }),
    );
  }

  const form = h('form', { id: 'api-key-form', class: 'inline-form', novalidate: true, dataset: { test: 'api-key-form' } }, field(t('keys.name'), name), create);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    error.clear();
    const keyName = name.value.trim();
    if (!keyName) {
      name.focus();
      return error.set(t('keys.error.name'));
    }
    busy(create, async () => {
      try {
        const answer = await api.post('/v1/api-keys', { name: keyName });
        items.unshift(answer.api_key);
        renderList();
        form.reset();
        showSecret(answer.key, answer.api_key.name);
      } catch (problem) {
        if (problem?.name !== 'AbortError') error.set(problem.message);
      }
    });
  });

  function showSecret(secret, keyName) {
    const input = h('input', { id: 'api-key-secret', type: 'text', readonly: true, value: secret, class: 'mono', dataset: { test: 'api-key-secret' }, spellcheck: 'false' });
    const copy = h('button', { type: 'button', id: 'api-key-copy', class: 'btn btn-small', dataset: { test: 'api-key-copy' } }, t('keys.copy'));
    const done = h('button', { type: 'button', id: 'api-key-secret-done', class: 'btn btn-small btn-ghost' }, t('keys.done'));
    const copied = h('span', { class: 'muted', role: 'status', id: 'api-key-copied' });
    copy.addEventListener('click', async () => {
      copied.textContent = (await copyText(secret, input)) ? t('keys.copied') : t('keys.copyFailed');
    });
    done.addEventListener('click', () => {
      clear(secretBox);
      secretBox.hidden = true;
      name.focus();
    });
    clear(secretBox, h('p', null, h('strong', null, t('keys.secretTitle', { name: keyName }))), h('p', { class: 'hint' }, t('keys.secretNote')), h('div', { class: 'secret-row' }, h('label', { for: 'api-key-secret', class: 'visually-hidden' }, t('keys.secretLabel')), input, copy), h('p', null, copied, ' ', done));
    secretBox.hidden = false;
    input.focus();
    input.select();
  }

  renderList();
  return h('section', { class: 'card form', id: 'api-keys', dataset: { test: 'api-keys' } }, h('h2', null, t('keys.title')), h('p', { class: 'hint' }, t('keys.lead')), form, error.el, status.el, secretBox, list);
}

function usageCard(usage) {
  const body = [];
  if (!usage) body.push(h('p', { class: 'muted' }, t('usage.unavailable')));
  else {
    const total = usage.total || {};
    body.push(
      h(
        'dl',
        { class: 'facts', id: 'usage-total', dataset: { test: 'usage' } },
        h('dt', null, t('usage.calls')),
        h('dd', null, formatNumber(total.calls)),
        h('dt', null, t('usage.prompt')),
        h('dd', null, formatNumber(total.prompt_tokens)),
        h('dt', null, t('usage.completion')),
        h('dd', null, formatNumber(total.completion_tokens)),
      ),
    );
    const days = (usage.days || []).slice(0, 7);
    if (days.length) {
      body.push(
        h(
          'table',
          { class: 'table small' },
          h('thead', null, h('tr', null, h('th', { scope: 'col' }, t('usage.day')), h('th', { scope: 'col' }, t('usage.calls')), h('th', { scope: 'col' }, t('usage.tokens')))),
          h('tbody', null, days.map((d) => h('tr', null, h('td', null, d.day), h('td', null, formatNumber(d.calls)), h('td', null, formatNumber((d.prompt_tokens || 0) + (d.completion_tokens || 0)))))),
        ),
      );
    }
  }
  return h('section', { class: 'card', id: 'usage' }, h('h2', null, t('usage.title')), ...body);
}

function sessionsCard(ctx, lim) {
  const error = errorArea('sessions-error');
  const everywhere = h('button', { type: 'button', id: 'logout-everywhere', class: 'btn btn-danger-ghost', dataset: { test: 'logout-everywhere' } }, t('settings.logoutEverywhere'));
  everywhere.addEventListener('click', async () => {
    const confirmed = await confirmDialog({ title: t('settings.logoutEverywhere.title'), message: t('settings.logoutEverywhere.body'), confirmLabel: t('settings.logoutEverywhere'), danger: true });
    if (!confirmed) return;
    try {
      await api.post('/v1/auth/logout-everywhere', undefined, { noRedirect: true });
      ctx.loggedOut();
    } catch (problem) {
      if (problem instanceof ApiProblem && problem.status === 401) return ctx.loggedOut();
      if (problem?.name !== 'AbortError') error.set(problem.message);
    }
  });

  const password = h('input', { id: 'delete-account-password', type: 'password', autocomplete: 'current-password', maxlength: lim.password_max_chars, dataset: { test: 'delete-account-password' } });
  const del = h('button', { type: 'submit', id: 'delete-account', class: 'btn btn-danger', dataset: { test: 'delete-account' } }, t('settings.deleteAccount'));
  const form = h('form', { id: 'delete-account-form', class: 'inline-form', novalidate: true }, hiddenUsername(), field(t('settings.deleteAccount.password'), password), del);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.clear();
    if (!password.value) {
      password.focus();
      return error.set(t('settings.password.error.current'));
    }
    const confirmed = await confirmDialog({ title: t('settings.deleteAccount.title'), message: t('settings.deleteAccount.body'), confirmLabel: t('settings.deleteAccount'), danger: true });
    if (!confirmed) return;
    try {
      await api.delete('/v1/me', { password: password.value });
      ctx.loggedOut();
    } catch (problem) {
      if (problem?.name !== 'AbortError') error.set(problem.message);
    }
  });

  return h(
    'section',
    { class: 'card danger-card', id: 'sessions' },
    h('h2', null, t('settings.sessions')),
    h('p', { class: 'hint' }, t('settings.logoutEverywhere.hint')),
    h('p', null, everywhere),
    h('h3', null, t('settings.deleteAccount')),
    h('p', { class: 'hint' }, t('settings.deleteAccount.hint')),
    form,
    error.el,
  );
}
