// The memory panel beside a chat: short- and long-term memory, viewable and editable (saved
// with PUT /v1/characters/{id}/memories).
//
// The server compresses memory by itself after a reply (a job of its own); the memory answer says
// while one is queued or running (`compressing`). The panel shows "compressing memory…" then,
// re-reads the memory until it is done, and says "memory updated" when its version changed.

import { api, ApiProblem } from './api.js';
import { h, clear, charCount, sleep } from './dom.js';
import { t } from './i18n.js';
import { limits } from './state.js';
import { errorArea, statusArea, busy } from './components.js';

/** How often a running compression is checked on, and for how long at most. */
const WATCH_EVERY_MS = 1500;
const WATCH_MS = 180000;

export function memoryPanel(characterId, ctx) {
  const url = `/v1/characters/${encodeURIComponent(characterId)}/memories`;
  const lim = limits();
  let memories = { short_term: [], long_term: [], version: null, compressing: false };
  let editing = null; // {short_term: [...], long_term: [...]} while editing
  let watching = false;

  const status = statusArea('memory-status');
  const watchNote = h('p', { id: 'memory-watch', class: 'muted memory-watch', hidden: true, dataset: { test: 'memory-watch' } }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), ' ', t('memory.watching'));
  const error = errorArea('memory-error');
  const body = h('div', { class: 'memory-body', id: 'memory-body' });
  const edit = h('button', { type: 'button', id: 'memory-edit', class: 'btn btn-small', dataset: { test: 'memory-edit' } }, t('memory.edit'));
  const refresh = h('button', { type: 'button', id: 'memory-refresh', class: 'btn btn-small btn-ghost', dataset: { test: 'memory-refresh' } }, t('memory.refresh'));
  const toolbar = h('div', { class: 'memory-toolbar' }, edit, refresh);

  const open = window.matchMedia('(min-width: 960px)').matches;
  const el = h(
    'details',
    { id: 'memory-panel', class: 'memory-panel card', open, dataset: { test: 'memory-panel' } },
    h('summary', { id: 'memory-summary' }, t('memory.title')),
    h('div', { class: 'memory-inner' }, h('p', { class: 'muted hint' }, t('memory.lead')), toolbar, watchNote, status.el, error.el, body),
  );

  function layerView(layer, entries) {
    const id = layer === 'short_term' ? 'memory-short' : 'memory-long';
    const test = layer === 'short_term' ? 'memory-short-term' : 'memory-long-term';
    const items = entries.length
      ? entries.map((entry) =>
          h(
            'li',
            { class: 'memory-entry', dataset: { test: 'memory-entry' } },
            h('span', { class: 'memory-text' }, entry.content),
            entry.importance !== undefined && entry.importance !== null ? h('span', { class: 'badge badge-neutral', title: t('memory.importance') }, String(entry.importance)) : null,
          ),
        )
      : [h('li', { class: 'muted memory-empty' }, t('memory.empty'))];
    return h(
      'section',
      { class: 'memory-layer' },
      h('h3', null, t(`memory.${layer}`), ' ', h('span', { class: 'muted' }, `(${entries.length})`)),
      h('ol', { id, class: 'memory-list', dataset: { test, layer } }, items),
    );
  }

  function editorView(layer) {
    const id = layer === 'short_term' ? 'memory-short' : 'memory-long';
    const test = layer === 'short_term' ? 'memory-short-term' : 'memory-long-term';
    const list = h('ol', { id, class: 'memory-list editing', dataset: { test, layer } });
    const addButton = h('button', { type: 'button', class: 'btn btn-small btn-ghost', id: `memory-add-${layer === 'short_term' ? 'short' : 'long'}`, dataset: { test: `memory-add-${layer === 'short_term' ? 'short' : 'long'}` } }, t('memory.add'));
    const renderEntries = () => {
      clear(
        list,
        editing[layer].map((entry, index) => {
          const inputId = `memory-${layer}-${index}`;
          const input = h('textarea', { id: inputId, rows: 2, maxlength: lim.memory_entry_chars, value: entry.content, dataset: { test: 'memory-entry-input' } });
          input.addEventListener('input', () => (entry.content = input.value));
          const remove = h('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', dataset: { test: 'memory-entry-remove' }, 'aria-label': t('memory.remove', { n: index + 1 }) }, '✕');
          remove.addEventListener('click', () => {
            editing[layer].splice(index, 1);
            renderEntries();
            addButton.focus();
          });
          return h('li', { class: 'memory-entry', dataset: { test: 'memory-entry' } }, h('label', { for: inputId, class: 'visually-hidden' }, t('memory.entryLabel', { layer: t(`memory.${layer}`), n: index + 1 })), input, remove);
        }),
      );
    };
    addButton.addEventListener('click', () => {
      editing[layer].push({ content: '' });
      renderEntries();
      const inputs = list.querySelectorAll('textarea');
      inputs[inputs.length - 1]?.focus();
    });
    renderEntries();
    return h('section', { class: 'memory-layer' }, h('h3', null, t(`memory.${layer}`)), list, addButton);
  }

  function paint() {
    if (editing) {
      const save = h('button', { type: 'button', id: 'memory-save', class: 'btn btn-primary btn-small', dataset: { test: 'memory-save' } }, t('common.save'));
      const cancel = h('button', { type: 'button', id: 'memory-cancel', class: 'btn btn-ghost btn-small', dataset: { test: 'memory-cancel' } }, t('common.cancel'));
      save.addEventListener('click', () => busy(save, saveEdits));
      cancel.addEventListener('click', () => {
        editing = null;
        error.clear();
        paint();
        edit.focus();
      });
      clear(body, editorView('short_term'), editorView('long_term'), h('div', { class: 'form-actions' }, save, cancel));
      toolbar.hidden = true;
    } else {
      clear(body, layerView('short_term', memories.short_term || []), layerView('long_term', memories.long_term || []));
      toolbar.hidden = false;
    }
  }

  async function saveEdits() {
    error.clear();
    const clean = {};
    for (const layer of ['short_term', 'long_term']) {
      const entries = editing[layer].map((e) => ({ ...e, content: e.content.trim() })).filter((e) => e.content);
      if (entries.length > lim.memory_entries) return error.set(t('memory.error.tooMany', { max: lim.memory_entries }));
      const long = entries.find((e) => charCount(e.content) > lim.memory_entry_chars);
      if (long) return error.set(t('memory.error.long', { max: lim.memory_entry_chars }));
      clean[layer] = entries.map((e) => (e.importance !== undefined && e.importance !== null ? { content: e.content, importance: e.importance } : { content: e.content }));
    }
    try {
      memories = await api.put(url, clean, { signal: ctx.signal });
      editing = null;
      paint();
      status.set(t('memory.saved'));
      edit.focus();
    } catch (problem) {
      if (problem?.name !== 'AbortError') error.set(problem.message);
    }
  }

  edit.addEventListener('click', () => {
    editing = {
      short_term: (memories.short_term || []).map((e) => ({ ...e })),
      long_term: (memories.long_term || []).map((e) => ({ ...e })),
    };
    paint();
    body.querySelector('textarea, button')?.focus();
  });

  refresh.addEventListener('click', () => busy(refresh, () => load({ announce: true })));

  async function load({ announce = false } = {}) {
    try {
      const fresh = await api.get(url, { signal: ctx.signal });
      const changed = memories.version !== null && fresh.version !== memories.version;
      watchNote.hidden = !fresh.compressing;
      if (editing) {
        if (changed) status.set(t('memory.changedWhileEditing'), { fade: false });
        memories = fresh;
        return changed;
      }
      memories = fresh;
      paint();
      if (fresh.compressing) afterReply();
      if (changed) status.set(t('memory.updated'));
      else if (announce) status.set(t('memory.upToDate'));
      return changed;
    } catch (problem) {
      if (problem?.name === 'AbortError') return false;
      if (!(problem instanceof ApiProblem && problem.status === 404)) error.set(problem.message);
      return false;
    }
  }

  /** After a reply (and whenever a compression is running): re-read the memory until no
   *  compression is pending any more. */
  function afterReply() {
    if (watching) return;
    watching = true;
    const until = Date.now() + WATCH_MS;
    (async () => {
      await load();
      while (ctx.active && memories.compressing && Date.now() < until) {
        await sleep(WATCH_EVERY_MS, ctx.signal);
        if (!ctx.active) break;
        await load();
      }
      watching = false;
    })();
  }

  paint();
  return { el, load, afterReply };
}
