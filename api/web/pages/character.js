// A character: picture (change, remove), brief, the eight persona categories, source metadata;
// Chat, Export card and Delete.

import { api, ApiProblem } from '../api.js';
import { h, formatDateTime, charCount, formatNumber, stored } from '../dom.js';
import { t } from '../i18n.js';
import { generationJobKey } from '../state.js';
import { confirmDialog, errorArea, statusArea, statusBadge, busy } from '../components.js';
import { renderCategory, personaCategories, SOURCE_CATEGORY, categoryLabel, safeLink } from '../profile.js';
import { progressHref } from './characters.js';
import { avatarEditor } from '../avatar.js';

export async function render(root, ctx) {
  const id = ctx.params.id;
  const { character } = await api.get(`/v1/characters/${encodeURIComponent(id)}`, { signal: ctx.signal });
  ctx.setTitle(character.name);
  const error = errorArea('character-error');
  const exportStatus = statusArea('export-card-status');

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
    character.status === 'ready' ? exportMenu(character, { error, status: exportStatus }, ctx) : null,
    del,
  );

  const picture = avatarEditor({
    path: `/v1/characters/${encodeURIComponent(id)}/avatar`,
    url: character.avatar_url,
    name: character.name,
    prefix: 'character-avatar',
    error,
    alt: t('avatar.character.alt', { name: character.name }),
    label: t('avatar.character.none', { name: character.name }),
    ctx,
    heading: [
      h('h1', null, character.name, ' ', statusBadge(character.status)),
      h('p', { class: 'muted' }, t('character.meta', { language: t(`lang.${character.language}`, {}, character.language), when: formatDateTime(character.created_at) })),
    ],
  });

  root.append(h('div', { class: 'page-head' }, picture.el, actions), error.el, picture.status.el, exportStatus.el);

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

/** The four card files a character can be exported as. */
export const CARD_EXPORTS = [
  { format: 'png', spec: 'v3' },
  { format: 'png', spec: 'v2' },
  { format: 'json', spec: 'v3' },
  { format: 'json', spec: 'v2' },
];

/** A file name from a character's name: `<name>.card.png` or `.card.json`, safe on every system. */
export function cardFilename(name, format) {
  const safe = String(name).replace(/[\u0000-\u001f\u007f/\\:*?"<>|]+/g, '_').replace(/^[\s.]+|[\s.]+$/g, '');
  return `${Array.from(safe).slice(0, 100).join('') || 'character'}.card.${format}`;
}

/** Saves a blob as a download named `filename` (an object URL on a temporary `<a download>`). */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  // The download has its own copy once started; the URL is only needed for the click.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/**
 * "Export card": a disclosure (`<details>`) offering the card as PNG or JSON, V3 or V2. The file
 * is fetched through the API client (the session cookie goes along) and saved from a blob.
 */
function exportMenu(character, { error, status }, ctx) {
  const options = CARD_EXPORTS.map(({ format, spec }) => {
    const button = h(
      'button',
      { type: 'button', id: `export-card-${format}-${spec}`, class: 'btn btn-small btn-ghost export-option', dataset: { test: 'export-card-option', format, spec } },
      t(`character.export.${format}`, { spec: spec.toUpperCase() }),
    );
    button.addEventListener('click', () =>
      busy(button, async () => {
        error.clear();
        status.set(t('character.export.working'), { fade: false });
        const path = `/v1/characters/${encodeURIComponent(character.id)}/card?format=${format}&spec=${spec}`;
        try {
          const { blob } = await api.download(path, { signal: ctx.signal });
          const filename = cardFilename(character.name, format);
          saveBlob(blob, filename);
          status.set(t('character.export.done', { file: filename }));
          menu.open = false;
          summary.focus();
        } catch (problem) {
          if (problem?.name === 'AbortError') return;
          status.set('');
          error.set(t('character.export.failed', { message: problem.message }));
        }
      }),
    );
    return h('li', null, button);
  });
  const summary = h('summary', { class: 'btn btn-ghost', id: 'export-card-toggle', dataset: { test: 'export-card-toggle' } }, t('character.export'));
  const menu = h(
    'details',
    { class: 'export-menu', id: 'export-card', dataset: { test: 'export-card' } },
    summary,
    h('div', { class: 'export-menu-panel' }, h('p', { class: 'hint', id: 'export-card-hint' }, t('character.export.hint')), h('ul', { class: 'export-menu-list', 'aria-describedby': 'export-card-hint' }, options)),
  );
  menu.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && menu.open) {
      menu.open = false;
      summary.focus();
    }
  });
  // A click elsewhere closes it, as a menu would.
  const outside = (event) => {
    if (menu.open && !menu.contains(event.target)) menu.open = false;
  };
  document.addEventListener('click', outside);
  ctx.onCleanup(() => document.removeEventListener('click', outside));
  return menu;
}

function sourceSection(character, metadata) {
  const source = character.source || {};
  const rows = [];
  const kind = source.kind ? t(`source.kind.${source.kind}`, {}, source.kind) : '—';
  rows.push([t('character.source.kind'), kind]);
  if (source.kind === 'wikipedia' && source.lang) rows.push([t('character.source.edition'), source.lang]);
  if ((source.kind === 'wikipedia' || source.kind === 'baike') && source.title) {
    rows.push([t('character.source.title'), source.title]);
    if (source.id) rows.push([t('character.source.entry'), source.id]);
  }
  if (typeof source.text === 'string') rows.push([t('character.source.length'), t('character.source.chars', { n: formatNumber(charCount(source.text)) })]);
  if (source.url) rows.push([t('character.source.url'), safeLink(source.url, displayUrl(source.url))]);
  if (character.prompt_version) rows.push([t('character.promptVersion'), character.prompt_version]);
  const section = h(
    'section',
    { class: 'card source-section', id: 'character-source', dataset: { test: 'character-source', kind: source.kind || null } },
    h('h2', null, t('character.source')),
    h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])),
  );
  const snapshot = character.source_snapshot;
  if (snapshot && typeof snapshot === 'object') section.append(snapshotBlock(snapshot));
  else if (source.kind && source.kind !== 'text' && character.status !== 'ready') {
    section.append(h('p', { class: 'muted', id: 'source-snapshot-pending' }, t('character.source.notFetched')));
  }
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

/** A URL as people read it (percent-escapes decoded); the link itself keeps the real one. */
function displayUrl(url) {
  try {
    return decodeURI(url);
  } catch {
    return url;
  }
}

/**
 * What the job fetched: address, title, revision, time, size, and the Markdown it was reduced
 * to, shown as plain text (never rendered).
 */
function snapshotBlock(snapshot) {
  const rows = [];
  if (snapshot.url) {
    const link = safeLink(String(snapshot.url), displayUrl(String(snapshot.url)));
    if (link.nodeType === Node.ELEMENT_NODE) {
      link.id = 'source-snapshot-url';
      link.dataset.test = 'source-snapshot-url';
    }
    rows.push([t('character.snapshot.url'), link]);
  }
  if (snapshot.title) rows.push([t('character.snapshot.title'), h('span', { id: 'source-snapshot-title' }, String(snapshot.title))]);
  if (snapshot.revision) rows.push([t('character.snapshot.revision'), h('span', { id: 'source-snapshot-revision', class: 'mono' }, String(snapshot.revision))]);
  if (snapshot.fetched_at) {
    rows.push([t('character.snapshot.fetched'), h('time', { id: 'source-snapshot-fetched', datetime: String(snapshot.fetched_at) }, formatDateTime(snapshot.fetched_at))]);
  }
  const markdown = typeof snapshot.markdown === 'string' ? snapshot.markdown : '';
  const chars = Number.isFinite(Number(snapshot.chars)) && snapshot.chars !== null ? Number(snapshot.chars) : charCount(markdown);
  const size = snapshot.truncated ? t('character.snapshot.truncated', { n: formatNumber(chars) }) : t('character.source.chars', { n: formatNumber(chars) });
  rows.push([t('character.snapshot.size'), h('span', { id: 'source-snapshot-size', dataset: { truncated: String(Boolean(snapshot.truncated)) } }, size)]);
  const block = h(
    'div',
    { class: 'source-snapshot', id: 'source-snapshot', dataset: { test: 'source-snapshot' } },
    h('h3', null, t('character.snapshot')),
    h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])),
  );
  if (markdown) {
    block.append(
      h(
        'details',
        { class: 'source-text', id: 'source-markdown', dataset: { test: 'source-markdown' } },
        h('summary', null, t('character.snapshot.show')),
        h('pre', { class: 'source-pre', id: 'source-markdown-text' }, markdown),
      ),
    );
  }
  return block;
}
