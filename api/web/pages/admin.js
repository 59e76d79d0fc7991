// Admin (the deployment's one admin): system stats, users with disable/enable.
// For anyone else the admin API answers 404, and so does this page (the not-found page).

import { api, query } from '../api.js';
import { h, clear, formatDateTime, formatNumber } from '../dom.js';
import { t } from '../i18n.js';
import { session } from '../state.js';
import { confirmDialog, errorArea, statusArea, busy } from '../components.js';

export async function render(root, ctx) {
  ctx.setTitle(t('admin.title'));
  const [stats, firstPage] = await Promise.all([api.get('/v1/admin/stats', { signal: ctx.signal }), api.get(`/v1/admin/users${query({ limit: 100 })}`, { signal: ctx.signal })]);
  const users = [...(firstPage.items || [])];
  let nextAfter = firstPage.next_after || null;

  const error = errorArea('admin-error');
  const status = statusArea('admin-status');
  const tbody = h('tbody', { id: 'admin-users', dataset: { test: 'admin-users' } });
  const more = h('button', { type: 'button', id: 'admin-more', class: 'btn btn-ghost', hidden: !nextAfter }, t('common.loadMore'));

  function renderUsers() {
    clear(
      tbody,
      users.map((user) => {
        const self = user.id === session.user?.id;
        const action = user.disabled
          ? h('button', { type: 'button', class: 'btn btn-small', dataset: { test: 'admin-enable', id: user.id } }, t('admin.enable'))
          : h('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', dataset: { test: 'admin-disable', id: user.id }, disabled: self || user.admin }, t('admin.disable'));
        action.setAttribute('aria-label', t(user.disabled ? 'admin.enable.aria' : 'admin.disable.aria', { name: user.username }));
        action.addEventListener('click', async () => {
          if (!user.disabled) {
            const confirmed = await confirmDialog({ title: t('admin.disable.title', { name: user.username }), message: t('admin.disable.body'), confirmLabel: t('admin.disable'), danger: true });
            if (!confirmed || !ctx.active) return;
          }
          await busy(action, async () => {
            error.clear();
            try {
              const answer = await api.post(`/v1/admin/users/${encodeURIComponent(user.id)}/${user.disabled ? 'enable' : 'disable'}`);
              Object.assign(user, answer.user);
              renderUsers();
              api.get('/v1/admin/stats', { signal: ctx.signal }).then((fresh) => statsSection.replaceWith((statsSection = statsView(fresh))), () => {});
              status.set(user.disabled ? t('admin.disabled', { name: user.username, jobs: answer.stopped_jobs ?? 0 }) : t('admin.enabled', { name: user.username }));
            } catch (problem) {
              if (problem?.name !== 'AbortError') error.set(problem.message);
            }
          });
        });
        return h(
          'tr',
          { dataset: { test: 'admin-user', id: user.id, disabled: String(Boolean(user.disabled)) } },
          h('th', { scope: 'row' }, user.username, user.admin ? h('span', { class: 'badge badge-neutral' }, t('admin.adminBadge')) : null),
          h('td', null, user.disabled ? h('span', { class: 'badge badge-bad' }, t('admin.statusDisabled')) : h('span', { class: 'badge badge-ok' }, t('admin.statusActive'))),
          h('td', null, formatNumber(user.characters)),
          h('td', null, formatNumber(user.active_jobs)),
          h('td', null, formatDateTime(user.created_at)),
          h('td', null, action),
        );
      }),
    );
  }

  more.addEventListener('click', () =>
    busy(more, async () => {
      try {
        const page = await api.get(`/v1/admin/users${query({ limit: 100, after: nextAfter })}`, { signal: ctx.signal });
        users.push(...(page.items || []));
        nextAfter = page.next_after || null;
        more.hidden = !nextAfter;
        renderUsers();
      } catch (problem) {
        if (problem?.name !== 'AbortError') error.set(problem.message);
      }
    }),
  );

  renderUsers();
  let statsSection = statsView(stats);
  root.append(
    h('div', { class: 'page-head' }, h('h1', null, t('admin.title'))),
    statsSection,
    h(
      'section',
      { class: 'card', id: 'admin-users-card' },
      h('h2', null, t('admin.users')),
      error.el,
      status.el,
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'table' },
          h(
            'thead',
            null,
            h('tr', null, ['admin.col.user', 'admin.col.status', 'admin.col.characters', 'admin.col.activeJobs', 'admin.col.created', 'admin.col.action'].map((key) => h('th', { scope: 'col' }, t(key)))),
          ),
          tbody,
        ),
      ),
      more,
    ),
  );
}

function statsView(stats) {
  const tile = (label, value, test) => h('div', { class: 'stat', dataset: { test } }, h('span', { class: 'stat-value' }, formatNumber(value)), h('span', { class: 'stat-label' }, label));
  const characters = Object.entries(stats.characters || {});
  const jobs = stats.jobs;
  let jobRows = [];
  if (Array.isArray(jobs)) jobRows = jobs.map((row) => [row.kind, row.status, row.count ?? row.n ?? row.total]);
  else if (jobs && typeof jobs === 'object') {
    for (const [kind, byStatus] of Object.entries(jobs)) {
      if (byStatus && typeof byStatus === 'object') for (const [s, n] of Object.entries(byStatus)) jobRows.push([kind, s, n]);
      else jobRows.push([kind, '', byStatus]);
    }
  }
  return h(
    'section',
    { class: 'card', id: 'admin-stats', dataset: { test: 'admin-stats' } },
    h('h2', null, t('admin.stats')),
    h(
      'div',
      { class: 'stats' },
      tile(t('admin.stat.users'), stats.users?.total, 'stat-users'),
      tile(t('admin.stat.disabled'), stats.users?.disabled, 'stat-disabled'),
      tile(t('admin.stat.messages'), stats.messages, 'stat-messages'),
      tile(t('admin.stat.groups'), stats.groups?.total, 'stat-groups'),
      tile(t('admin.stat.groupMessages'), stats.groups?.messages, 'stat-group-messages'),
      tile(t('admin.stat.finished'), stats.jobs_last_hour?.finished, 'stat-finished'),
      tile(t('admin.stat.failed'), stats.jobs_last_hour?.failed, 'stat-failed'),
    ),
    characters.length
      ? h('p', null, h('strong', null, t('admin.stat.characters')), ' ', characters.map(([s, n]) => `${t(`status.${s}`, {}, s)}: ${formatNumber(n)}`).join(t('common.listSeparator')))
      : null,
    jobRows.length
      ? h(
          'details',
          null,
          h('summary', null, t('admin.stat.jobs')),
          h('table', { class: 'table small' }, h('thead', null, h('tr', null, h('th', { scope: 'col' }, t('admin.col.kind')), h('th', { scope: 'col' }, t('admin.col.status')), h('th', { scope: 'col' }, t('admin.col.count')))), h('tbody', null, jobRows.map(([k, s, n]) => h('tr', null, h('td', null, k), h('td', null, s), h('td', null, formatNumber(n)))))),
        )
      : null,
    h('p', { class: 'muted' }, t('admin.broker', { state: stats.broker_connected ? t('admin.connected') : t('admin.disconnected') })),
  );
}
