// Groups: the list, and creating one (a name and members picked from your characters).

import { api, ApiProblem, query } from '../api.js';
import { h, clear, charCount, formatDateTime } from '../dom.js';
import { t } from '../i18n.js';
import { limits } from '../state.js';
import { confirmDialog, errorArea, field, busy, emptyState, statusBadge } from '../components.js';

export const MAX_MEMBERS = 12;

/** All of the user's characters (every page). */
export async function allCharacters(signal) {
  const items = [];
  let before = null;
  for (let i = 0; i < 50; i++) {
    const page = await api.get(`/v1/characters${query({ limit: 200, before })}`, { signal });
    items.push(...(page.items || []));
    before = page.next_before;
    if (!before) break;
  }
  return items;
}

export async function render(root, ctx) {
  ctx.setTitle(t('groups.title'));
  const lim = limits();
  const [groupsAnswer, characters] = await Promise.all([api.get('/v1/groups', { signal: ctx.signal }), allCharacters(ctx.signal)]);
  const groups = groupsAnswer.items || [];

  const list = h('ul', { id: 'group-list', class: 'item-list', dataset: { test: 'group-list' } });
  const listError = errorArea('groups-error');

  function renderList() {
    if (!groups.length) {
      clear(list, h('li', { class: 'empty' }, emptyState(t('groups.empty'))));
      return;
    }
    clear(
      list,
      groups.map((group) => {
        const del = h('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', dataset: { test: 'delete-group' }, 'aria-label': t('groups.delete.aria', { name: group.name }) }, t('common.delete'));
        del.addEventListener('click', () => remove(group));
        return h(
          'li',
          { class: 'item card', dataset: { test: 'group-item', id: group.id } },
          h(
            'div',
            { class: 'item-main' },
            h('h2', { class: 'item-title' }, h('a', { href: `/groups/${encodeURIComponent(group.id)}`, dataset: { test: 'group-link' } }, group.name)),
            h('p', { class: 'item-brief' }, t('groups.membersList', { n: group.members.length, names: group.members.map((m) => m.name).join(t('common.listSeparator')) })),
            h('p', { class: 'item-meta muted' }, t('characters.created', { when: formatDateTime(group.created_at) })),
          ),
          h('div', { class: 'item-actions' }, h('a', { href: `/groups/${encodeURIComponent(group.id)}`, class: 'btn btn-small btn-primary' }, t('groups.open')), del),
        );
      }),
    );
  }

  async function remove(group) {
    const confirmed = await confirmDialog({ title: t('groups.delete.title', { name: group.name }), message: t('groups.delete.body'), confirmLabel: t('common.delete'), danger: true });
    if (!confirmed || !ctx.active) return;
    try {
      await api.delete(`/v1/groups/${encodeURIComponent(group.id)}`);
    } catch (problem) {
      if (!(problem instanceof ApiProblem && problem.status === 404)) return listError.set(problem.message);
    }
    groups.splice(groups.indexOf(group), 1);
    renderList();
  }

  // ---- create
  const name = h('input', { id: 'group-name', type: 'text', required: true, maxlength: lim.name_chars, autocomplete: 'off', dataset: { test: 'group-name' } });
  const options = characters.map((character) => {
    const id = `group-member-${character.id}`;
    const box = h('input', { type: 'checkbox', id, value: character.id, dataset: { test: 'group-member-option', id: character.id } });
    return h('li', { class: 'check-option' }, box, h('label', { for: id }, character.name, ' ', character.status === 'ready' ? null : statusBadge(character.status)));
  });
  const createError = errorArea('group-create-error');
  const submit = h('button', { type: 'submit', id: 'group-create', class: 'btn btn-primary', dataset: { test: 'group-create' } }, t('groups.create'));
  const form = h(
    'form',
    { id: 'group-create-form', class: 'card form', novalidate: true, dataset: { test: 'group-create-form' } },
    h('h2', null, t('groups.new')),
    field(t('groups.name'), name),
    h(
      'fieldset',
      { class: 'fieldset' },
      h('legend', null, t('groups.pick', { max: MAX_MEMBERS })),
      characters.length ? h('ul', { class: 'check-list', id: 'group-member-options' }, options) : h('p', { class: 'muted' }, t('groups.noCharacters'), ' ', h('a', { href: '/characters/new' }, t('characters.new'))),
    ),
    createError.el,
    h('div', { class: 'form-actions' }, submit),
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    createError.clear();
    const groupName = name.value.trim();
    const ids = [...form.querySelectorAll('input[type=checkbox]:checked')].map((box) => box.value);
    if (!groupName) return fail(t('groups.error.name'), name);
    if (charCount(groupName) > lim.name_chars) return fail(t('create.error.nameLong', { max: lim.name_chars }), name);
    if (!ids.length) return fail(t('groups.error.members'), form.querySelector('input[type=checkbox]') || name);
    if (ids.length > MAX_MEMBERS) return fail(t('groups.error.tooMany', { max: MAX_MEMBERS }), form.querySelector('input[type=checkbox]'));
    await busy(submit, async () => {
      try {
        const { group } = await api.post('/v1/groups', { name: groupName, character_ids: ids });
        ctx.navigate(`/groups/${encodeURIComponent(group.id)}`);
      } catch (problem) {
        if (problem?.name !== 'AbortError') createError.set(problem.message);
      }
    });
  });

  function fail(message, control) {
    createError.set(message);
    control?.focus();
  }

  renderList();
  root.append(
    h('div', { class: 'page-head' }, h('h1', null, t('groups.title'))),
    h('p', { class: 'lead' }, t('groups.lead')),
    h('div', { class: 'two-col' }, h('section', { 'aria-label': t('groups.title') }, listError.el, list), form),
  );
}
