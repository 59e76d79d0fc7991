// Shared UI pieces: confirmation dialog, error areas, form fields, status badges.

import { h, clear, charCount, formatTime, formatDateTime } from './dom.js';
import { t } from './i18n.js';

/**
 * A modal confirmation (<dialog>). Resolves true when confirmed, false otherwise.
 * Buttons: #confirm-ok (data-test="confirm-ok"), #confirm-cancel (data-test="confirm-cancel").
 */
export function confirmDialog({ title, message, confirmLabel, danger = false }) {
  return new Promise((resolve) => {
    document.getElementById('confirm-dialog')?.remove();
    const ok = h('button', { type: 'submit', value: 'ok', id: 'confirm-ok', class: ['btn', danger ? 'btn-danger' : 'btn-primary'], dataset: { test: 'confirm-ok' } }, confirmLabel || t('common.confirm'));
    const cancel = h('button', { type: 'submit', value: 'cancel', id: 'confirm-cancel', class: 'btn btn-ghost', dataset: { test: 'confirm-cancel' }, formnovalidate: true }, t('common.cancel'));
    const dialog = h(
      'dialog',
      { id: 'confirm-dialog', class: 'dialog', dataset: { test: 'confirm-dialog' }, 'aria-labelledby': 'confirm-title' },
      h(
        'form',
        { method: 'dialog', class: 'dialog-form' },
        h('h2', { id: 'confirm-title' }, title),
        message ? h('p', { class: 'dialog-message' }, message) : null,
        h('div', { class: 'dialog-actions' }, cancel, ok),
      ),
    );
    document.body.append(dialog);
    dialog.addEventListener('close', () => {
      const confirmed = dialog.returnValue === 'ok';
      dialog.remove();
      resolve(confirmed);
    });
    dialog.showModal();
    cancel.focus();
  });
}

/** An error area: hidden until `set(message)`. role=alert so it is announced. */
export function errorArea(id, extraClass = '') {
  const el = h('p', { id, class: ['error-message', extraClass], role: 'alert', dataset: { test: 'error' }, hidden: true });
  return {
    el,
    set(message) {
      el.textContent = message || '';
      el.hidden = !message;
    },
    clear() {
      el.textContent = '';
      el.hidden = true;
    },
  };
}

/** A status line (polite live region) for "Saved." style messages. */
export function statusArea(id) {
  const el = h('p', { id, class: 'status-message', role: 'status', 'aria-live': 'polite' });
  let timer = null;
  return {
    el,
    set(message, { fade = true } = {}) {
      el.textContent = message || '';
      clearTimeout(timer);
      if (fade && message) timer = setTimeout(() => (el.textContent = ''), 5000);
    },
  };
}

/** A labelled field: <div class="field"><label for=id>text</label> control hint</div>. */
export function field(label, control, hint) {
  const hintEl = hint ? h('p', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
}

/**
 * A live "n / max" counter for a text control with a maximum length (in code points, as the
 * server counts). Returns the counter element; it turns red and says so past the limit.
 */
export function lengthCounter(control, max, id) {
  const el = h('span', { class: 'counter', id, 'aria-live': 'off' });
  const update = () => {
    const n = charCount(control.value);
    el.textContent = t('common.counter', { n: n.toLocaleString(), max: max.toLocaleString() });
    el.classList.toggle('over', n > max);
  };
  control.addEventListener('input', update);
  update();
  return { el, update };
}

const STATUS_CLASS = { ready: 'ok', generating: 'busy', failed: 'bad' };

/** A character status badge (ready / generating / failed). */
export function statusBadge(status) {
  return h('span', { class: ['badge', `badge-${STATUS_CLASS[status] || 'neutral'}`], dataset: { test: 'character-status', status } }, t(`status.${status}`, {}, status));
}

/** Runs an async action with the button disabled (and aria-busy) meanwhile. */
export async function busy(button, action) {
  const wasDisabled = button.disabled;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await action();
  } finally {
    button.disabled = wasDisabled;
    button.removeAttribute('aria-busy');
  }
}

/** An empty-state box. */
export function emptyState(text, action) {
  return h('div', { class: 'empty-state', dataset: { test: 'empty-state' } }, h('p', null, text), action || null);
}

/** Copies text to the clipboard; resolves true on success. */
export async function copyText(text, fallbackInput) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (fallbackInput) {
      fallbackInput.focus();
      fallbackInput.select();
      try {
        return document.execCommand('copy');
      } catch {
        return false;
      }
    }
    return false;
  }
}

/** On narrow screens the conversation sits below the page head: bring it into view. */
export function revealConversation(root) {
  if (!window.matchMedia('(max-width: 959px)').matches) return;
  const main = root.querySelector('.chat-main');
  if (main) requestAnimationFrame(() => main.scrollIntoView({ block: 'start' }));
}

export { clear };

/**
 * The live handle of one message bubble (chat and group transcripts): its text (streamed in
 * with `append`, replaced with `setText`), state (`data-state`; `aria-live` while streaming),
 * id (registered in `views`), time and note. `stick` keeps the log scrolled to the bottom
 * across the change when it was there.
 */
export function bubbleView({ li, body, time, note, text, views, stick }) {
  const view = {
    li,
    body,
    text,
    setText(value) {
      view.text = value;
      stick(() => {
        body.textContent = value;
        li.classList.toggle('empty', !value);
      });
    },
    append(delta) {
      view.setText(view.text + delta);
    },
    setState(value) {
      li.dataset.state = value;
      if (value === 'streaming') body.setAttribute('aria-live', 'polite');
      else body.removeAttribute('aria-live');
      li.setAttribute('aria-busy', value === 'streaming' || value === 'sending' ? 'true' : 'false');
    },
    setId(value) {
      if (!value) return;
      li.dataset.id = value;
      views.set(value, view);
    },
    setTime(iso) {
      if (!iso) return;
      time.dateTime = iso;
      time.title = formatDateTime(iso);
      time.textContent = formatTime(iso);
    },
    setNote(message, kind = '') {
      note.textContent = message || '';
      note.hidden = !message;
      note.className = ['bubble-note', kind].filter(Boolean).join(' ');
    },
  };
  return view;
}

/**
 * Scrolling of a transcript that grows at the bottom: `stick(change)` runs a DOM change and keeps
 * the view at the bottom if it was there (a person reading older messages is not pulled down).
 */
export function stickyScroll(log) {
  const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const scrollToBottom = () => {
    log.scrollTop = log.scrollHeight;
  };
  const stick = (change) => {
    const atBottom = nearBottom();
    change();
    if (atBottom) scrollToBottom();
  };
  return { nearBottom, scrollToBottom, stick };
}

/**
 * A transcript's history (chat and group): the newest page first, then older pages by the
 * `before=` cursor, one request at a time, as the log is scrolled to its top or "Load earlier
 * messages" (`#load-older`) is pressed, keeping the reader's place; `#history-start` says when
 * the beginning is reached. Puts those two and `list` into `log`.
 *
 * - `fetchPage(before)`: a page `{items (newest first), next_before}`; `before` is null for the
 *   newest page.
 * - `insert(items)`: puts a page's messages (oldest first) at the top of `list`.
 * - `onFirstPage(items)`: after the newest page is shown at the bottom of the log.
 * - `onError(problem)`: a failed page load (not an abort).
 */
export function historyPager({ log, list, fetchPage, insert, onFirstPage = async () => {}, onError, isActive }) {
  const older = h('button', { type: 'button', id: 'load-older', class: 'btn btn-small btn-ghost load-older', hidden: true, dataset: { test: 'load-older' } }, t('chat.older'));
  const start = h('p', { id: 'history-start', class: 'muted history-start', hidden: true }, t('chat.historyStart'));
  log.append(older, start, list);
  let nextBefore = null;
  let loading = false;
  let loadedOnce = false;

  async function loadOlder() {
    if (loading || (loadedOnce && !nextBefore)) return;
    loading = true;
    older.disabled = true;
    try {
      const page = await fetchPage(loadedOnce ? nextBefore : null);
      const items = (page.items || []).slice().reverse();
      const first = !loadedOnce;
      const previousHeight = log.scrollHeight;
      const previousTop = log.scrollTop;
      insert(items);
      nextBefore = page.next_before || null;
      loadedOnce = true;
      if (first) {
        log.scrollTop = log.scrollHeight;
        await onFirstPage(items);
      } else {
        log.scrollTop = previousTop + (log.scrollHeight - previousHeight);
      }
      older.hidden = !nextBefore;
      start.hidden = Boolean(nextBefore) || list.children.length === 0;
    } finally {
      loading = false;
      older.disabled = false;
    }
    // Not enough to scroll yet: fetch the next page (one at a time).
    if (nextBefore && log.scrollHeight <= log.clientHeight + 10 && isActive()) await loadOlder();
  }

  const loadInBackground = () =>
    loadOlder().catch((problem) => {
      if (problem?.name !== 'AbortError') onError(problem);
    });
  older.addEventListener('click', loadInBackground);
  log.addEventListener('scroll', () => {
    if (log.scrollTop < 60 && nextBefore && !loading) loadInBackground();
  });
  return { loadOlder };
}
