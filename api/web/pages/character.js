// A character: brief, the eight persona categories, source metadata; Chat and Delete.

import { api, ApiProblem } from '../api.js';
import { h, formatDateTime, charCount, formatNumber, stored } from '../dom.js';
import { t } from '../i18n.js';
import { generationJobKey } from '../state.js';
import { confirmDialog, errorArea, statusBadge } from '../components.js';
import { renderCategory, personaCategories, SOURCE_CATEGORY, categoryLabel } from '../profile.js';
import { progressHref } from './characters.js';

export async function render(root, ctx) {
  const id = ctx.params.id;
  const { character } = await api.get(`/v1/characters/${encodeURIComponent(id)}`, { signal: ctx.signal });
  ctx.setTitle(character.name);
  const error = errorArea('character-error');

  const del = h('button', { type: 'button', id: 'delete-character', class: 'btn btn-danger-ghost', dataset: { test: 'delete-character' } }, t('common.delete'));
  del.addEventListener('click', async () => {
    const confirmed = await confirmDialog({ title: t('characters.delete.title', { name: character.name }), message: t('characters.delete.body'), confirmLabel: t('common.delete'), danger: true });
    if (!confirmed || !ctx.active) return;
    try {
      await api.delete(`/v1/characters/${encodeURIComponent(id)}`);
    } catch (problem) {
      if (!(problem instanceof ApiProblem && problem.status === 404)) return error.set(problem.message);
    }
    stored.remove(localStorage, generationJobKey(id));
    ctx.navigate('/', { replace: true });
  });

  const actions = h(
    'div',
    { class: 'page-actions' },
    character.status === 'ready'
      ? h('a', { href: `/characters/${encodeURIComponent(id)}/chat`, id: 'chat-character', class: 'btn btn-primary', dataset: { test: 'chat-character' } }, t('character.chat'))
      : null,
    character.status === 'generating'
      ? h('a', { href: progressHref(character), id: 'progress-link', class: 'btn btn-primary', dataset: { test: 'progress-link' } }, t('characters.viewProgress'))
      : null,
    del,
  );

  root.append(
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, character.name, ' ', statusBadge(character.status)), h('p', { class: 'muted' }, t('character.meta', { language: t(`lang.${character.language}`, {}, character.language), when: formatDateTime(character.created_at) }))), actions),
    error.el,
  );

  if (character.status === 'failed') {
    root.append(h('p', { class: 'notice notice-bad', dataset: { test: 'character-failed' } }, t('character.failed'), ' ', h('a', { href: progressHref(character) }, t('character.failed.details'))));
  } else if (character.status === 'generating') {
    root.append(h('p', { class: 'notice' }, t('character.generating')));
  }

  if (character.brief) {
    root.append(h('section', { class: 'card brief', id: 'character-brief', dataset: { test: 'character-brief' } }, h('h2', null, t('character.brief')), h('p', { class: 'brief-text' }, character.brief)));
  }

  const profile = character.profile;
  if (profile && typeof profile === 'object') {
    const categories = personaCategories(profile);
    root.append(h('div', { class: 'profile-grid', id: 'profile', dataset: { test: 'profile' } }, categories.map((key) => renderCategory(key, profile[key]))));
  }

  root.append(sourceSection(character, profile?.[SOURCE_CATEGORY]));
}

function sourceSection(character, metadata) {
  const source = character.source || {};
  const rows = [];
  const kind = source.kind ? t(`source.kind.${source.kind}`, {}, source.kind) : '—';
  rows.push([t('character.source.kind'), kind]);
  if (typeof source.text === 'string') rows.push([t('character.source.length'), t('character.source.chars', { n: formatNumber(charCount(source.text)) })]);
  if (source.url) rows.push([t('character.source.url'), source.url]);
  if (character.prompt_version) rows.push([t('character.promptVersion'), character.prompt_version]);
  const section = h(
    'section',
    { class: 'card source-section', id: 'character-source', dataset: { test: 'character-source' } },
    h('h2', null, t('character.source')),
    h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])),
  );
  if (metadata && typeof metadata === 'object') {
    const meta = renderCategory(SOURCE_CATEGORY, metadata);
    meta.classList.remove('card');
    meta.classList.add('source-metadata');
    meta.dataset.test = 'source-metadata';
    meta.querySelector('h2').replaceWith(h('h3', null, categoryLabel(SOURCE_CATEGORY)));
    section.append(meta);
  }
  if (typeof source.text === 'string' && source.text) {
    section.append(h('details', { class: 'source-text' }, h('summary', null, t('character.source.show')), h('pre', { class: 'source-pre' }, source.text)));
  }
  return section;
}
