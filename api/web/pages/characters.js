// The characters list (home): newest first, each with its picture (or initial), filter as you
// type, delete with confirmation, characters still generating link to their progress; a
// Character Card imported from a file (chosen, or dropped on the page) opens as its new character.

import { api, ApiProblem, query } from '../api.js';
import { h, clear, formatDateTime, sleep, stored } from '../dom.js';
import { t } from '../i18n.js';
import { generationJobKey } from '../state.js';
import { confirmDialog, errorArea, statusArea, statusBadge, emptyState } from '../components.js';
import { avatarView } from '../avatar.js';

const PAGE_SIZE = 100;
const POLL_MS = 4000;
/** The API's body limit, which a card file must fit in. */
const MAX_CARD_BYTES = 8 * 1024 * 1024;

/** The generation job of a character: named by the API if it ever does, else remembered here. */
export function generationJob(character) {
  return character.job?.id || character.job_id || stored.get(localStorage, generationJobKey(character.id));
}

export function progressHref(character) {
  const job = generationJob(character);
  return `/characters/${encodeURIComponent(character.id)}/generating${job ? `?job=${encodeURIComponent(job)}` : ''}`;
}

export async function render(root, ctx) {
  ctx.setTitle(t('characters.title'));
  const items = [];
  let nextBefore = null;

  const filter = h('input', { id: 'character-filter', type: 'search', autocomplete: 'off', dataset: { test: 'character-filter' }, placeholder: t('characters.filter.placeholder') });
  const list = h('ul', { id: 'character-list', class: 'item-list', dataset: { test: 'character-list' } });
  const count = h('p', { id: 'character-count', class: 'muted', role: 'status' });
  const more = h('button', { type: 'button', id: 'load-more-characters', class: 'btn btn-ghost', hidden: true, dataset: { test: 'load-more' } }, t('common.loadMore'));
  const error = errorArea('characters-error');
  const importer = cardImporter(root, ctx, error);

  root.append(
    h(
      'div',
      { class: 'page-head' },
      h('h1', null, t('characters.title')),
      h('div', { class: 'page-actions' }, importer.control, h('a', { href: '/characters/new', class: 'btn btn-primary', id: 'new-character', dataset: { test: 'new-character' } }, t('characters.new'))),
    ),
    h('div', { class: 'toolbar' }, h('div', { class: 'field field-inline' }, h('label', { for: 'character-filter' }, t('characters.filter')), filter)),
    importer.hint,
    error.el,
    importer.status.el,
    count,
    list,
    h('div', { class: 'list-more' }, more),
  );

  function matches(character) {
    const needle = filter.value.trim().toLocaleLowerCase();
    return !needle || character.name.toLocaleLowerCase().includes(needle);
  }

  function renderList() {
    const shown = items.filter(matches);
    if (!items.length) {
      clear(list);
      clear(count);
      list.append(h('li', { class: 'empty' }, emptyState(t('characters.empty'), h('a', { href: '/characters/new', class: 'btn btn-primary' }, t('characters.new')))));
    } else {
      clear(list, shown.map(renderItem));
      count.textContent = filter.value.trim() ? t('characters.filtered', { shown: shown.length, total: items.length }) : t('characters.count', { n: items.length });
      if (!shown.length) list.append(h('li', { class: 'empty muted' }, t('characters.noMatch')));
    }
    more.hidden = !nextBefore;
  }

  function renderItem(character) {
    const generating = character.status === 'generating';
    const href = generating ? progressHref(character) : `/characters/${encodeURIComponent(character.id)}`;
    const del = h('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', dataset: { test: 'delete-character' }, 'aria-label': t('characters.delete.aria', { name: character.name }) }, t('common.delete'));
    del.addEventListener('click', () => remove(character));
    return h(
      'li',
      { class: 'item card', dataset: { test: 'character-item', id: character.id, status: character.status } },
      h(
        'div',
        { class: 'item-lead' },
        // Beside the name it pictures: decorative (alt ''), so the name is not read twice.
        avatarView({ url: character.avatar_url, name: character.name, size: 'small', test: 'character-avatar', placeholderTest: 'character-avatar-placeholder' }),
        h(
          'div',
          { class: 'item-main' },
          h('h2', { class: 'item-title' }, h('a', { href, dataset: { test: 'character-link' } }, character.name), ' ', statusBadge(character.status)),
          character.brief ? h('p', { class: 'item-brief' }, character.brief) : null,
          generating ? h('p', { class: 'muted' }, h('a', { href, dataset: { test: 'progress-link' } }, t('characters.viewProgress'))) : null,
          h('p', { class: 'item-meta muted' }, t('characters.created', { when: formatDateTime(character.created_at) })),
        ),
      ),
      h(
        'div',
        { class: 'item-actions' },
        character.status === 'ready' ? h('a', { href: `/characters/${encodeURIComponent(character.id)}/chat`, class: 'btn btn-small btn-primary', dataset: { test: 'chat-link' } }, t('characters.chat')) : null,
        del,
      ),
    );
  }

  async function remove(character) {
    const confirmed = await confirmDialog({
      title: t('characters.delete.title', { name: character.name }),
      message: t('characters.delete.body'),
      confirmLabel: t('common.delete'),
      danger: true,
    });
    if (!confirmed || !ctx.active) return;
    error.clear();
    try {
      await api.delete(`/v1/characters/${encodeURIComponent(character.id)}`);
    } catch (problem) {
      if (!(problem instanceof ApiProblem && problem.status === 404)) {
        error.set(problem.message);
        return;
      }
    }
    stored.remove(localStorage, generationJobKey(character.id));
    const index = items.findIndex((c) => c.id === character.id);
    if (index >= 0) items.splice(index, 1);
    renderList();
    filter.focus();
  }

  async function loadPage() {
    const page = await api.get(`/v1/characters${query({ limit: PAGE_SIZE, before: nextBefore })}`, { signal: ctx.signal });
    for (const item of page.items || []) if (!items.some((c) => c.id === item.id)) items.push(item);
    nextBefore = page.next_before || null;
  }

  more.addEventListener('click', async () => {
    more.disabled = true;
    try {
      await loadPage();
      renderList();
    } catch (problem) {
      if (problem?.name !== 'AbortError') error.set(problem.message);
    } finally {
      more.disabled = false;
    }
  });

  filter.addEventListener('input', async () => {
    renderList();
    // Filtering looks at every character: fetch the rest once someone filters.
    while (filter.value.trim() && nextBefore && ctx.active) {
      try {
        await loadPage();
      } catch {
        break;
      }
      renderList();
    }
  });

  await loadPage();
  renderList();
  poll();

  // Characters still generating: refresh their status until they settle.
  async function poll() {
    while (ctx.active) {
      await sleep(POLL_MS, ctx.signal);
      if (!ctx.active) return;
      const pending = items.filter((c) => c.status === 'generating').slice(0, 10);
      if (!pending.length) continue;
      let changed = false;
      for (const character of pending) {
        try {
          const { character: fresh } = await api.get(`/v1/characters/${encodeURIComponent(character.id)}`, { signal: ctx.signal });
          if (fresh.status !== character.status || fresh.brief !== character.brief) {
            Object.assign(character, { status: fresh.status, brief: fresh.brief, updated_at: fresh.updated_at });
            changed = true;
          }
        } catch (problem) {
          if (problem?.name === 'AbortError') return;
          if (problem instanceof ApiProblem && problem.status === 404) {
            items.splice(items.indexOf(character), 1);
            changed = true;
          }
        }
      }
      if (changed && ctx.active) {
        const focused = document.activeElement === filter;
        renderList();
        if (focused) filter.focus();
      }
    }
  }
}

/**
 * "Import card": a file input (`.png`, `.json`) dressed as a button, and the whole page as a drop
 * target. The file goes to `POST /v1/characters/import` as a form's `file` part; the new
 * character's page opens. A refused file leaves the page as it was, with the server's reason in
 * the error area.
 */
function cardImporter(root, ctx, error) {
  const max = formatBytes(MAX_CARD_BYTES);
  const status = statusArea('import-card-status');
  const input = h('input', {
    type: 'file',
    id: 'import-card-file',
    class: 'visually-hidden',
    accept: '.png,.json,image/png,application/json',
    'aria-describedby': 'import-card-hint',
    dataset: { test: 'import-card-file' },
  });
  const control = h('label', { class: 'btn btn-ghost file-button', id: 'import-card', dataset: { test: 'import-card' } }, t('characters.import'), input);
  const hint = h('p', { class: 'hint import-hint', id: 'import-card-hint' }, t('characters.import.hint', { max }));
  let importing = false;

  async function upload(file) {
    if (!file || importing) return;
    error.clear();
    if (file.size > MAX_CARD_BYTES) {
      error.set(t('characters.import.tooLarge', { file: file.name, max }));
      return;
    }
    importing = true;
    control.setAttribute('aria-busy', 'true');
    input.disabled = true;
    status.set(t('characters.import.working', { file: file.name }), { fade: false });
    const form = new FormData();
    form.append('file', file, file.name);
    try {
      const { character } = await api.post('/v1/characters/import', form, { signal: ctx.signal });
      if (ctx.active) ctx.navigate(`/characters/${encodeURIComponent(character.id)}`);
    } catch (problem) {
      if (problem?.name === 'AbortError' || problem?.redirected) return;
      status.set('');
      error.set(t('characters.import.refused', { file: file.name, message: problem.message }));
      control.focus();
    } finally {
      importing = false;
      control.removeAttribute('aria-busy');
      input.disabled = false;
      // The same file chosen again is a new choice.
      input.value = '';
    }
  }

  input.addEventListener('change', () => upload(input.files?.[0]));

  // Drag and drop anywhere on the page; only drags that carry files are taken. `root` outlives the
  // page: its listeners go with the page's signal.
  const listening = { signal: ctx.signal };
  const carriesFiles = (event) => Array.from(event.dataTransfer?.types || []).includes('Files');
  let depth = 0;
  const dropping = (on) => {
    if (on) root.dataset.dropping = 'true';
    else delete root.dataset.dropping;
  };
  root.addEventListener('dragenter', (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    depth++;
    dropping(true);
  }, listening);
  root.addEventListener('dragover', (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  }, listening);
  root.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) dropping(false);
  }, listening);
  root.addEventListener('drop', (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    depth = 0;
    dropping(false);
    upload(event.dataTransfer.files?.[0]);
  }, listening);
  root.dataset.dropLabel = t('characters.import.drop');
  ctx.onCleanup(() => {
    dropping(false);
    delete root.dataset.dropLabel;
  });

  return { control, hint, status };
}

function formatBytes(bytes) {
  return bytes >= 1024 * 1024 ? `${bytes / (1024 * 1024)} MB` : `${Math.round(bytes / 1024)} KB`;
}
