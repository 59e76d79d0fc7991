// Pictures (avatars) of characters and of the user: a round image, or without one the first
// letter of the name in a coloured circle; and the editor beside it, "Change picture" (a file
// input dressed as a button) and "Remove picture" (confirmed).
//
// The API stores every upload re-encoded as a PNG and serves it from `…/avatar` (the session
// cookie authenticates an <img>). A picture's address carries its tag (`?v=<etag>`), as the
// API's `avatar_url` does, so a new picture is a new address and an unchanged one stays cached.

import { api, ApiProblem } from './api.js';
import { h, clear } from './dom.js';
import { t } from './i18n.js';
import { confirmDialog, statusArea } from './components.js';

/** The API's limit for a file, checked before sending. */
export const MAX_PICTURE_BYTES = 8 * 1024 * 1024;
/** What the API accepts (and the file chooser offers). */
export const PICTURE_TYPES = 'image/png,image/jpeg,image/webp,image/gif';
const HUES = 6;

/** The address of a stored picture: `url` (as `PUT` answers it) with its tag in the query. */
export function pictureUrl(url, etag) {
  return etag ? `${url}?v=${encodeURIComponent(etag)}` : url;
}

/** The first letter of a name (a whole code point: 李, not half of a surrogate pair), upper-cased. */
export function initial(name) {
  const first = Array.from(String(name || '').trim())[0];
  return first ? first.toLocaleUpperCase() : '?';
}

/** A placeholder colour (one of a few, by the name) so neighbouring placeholders differ. */
function hue(name) {
  let sum = 0;
  for (const char of String(name || '')) sum = (sum * 31 + char.codePointAt(0)) % 1_000_003;
  return sum % HUES;
}

/**
 * A picture: `<img>` of `url`, or the placeholder when `url` is empty. `size`: `large` (a page's
 * picture) or `small` (a list's thumbnail). `alt`: the image's text ('' for a thumbnail beside
 * the name it shows); `label`: the placeholder's accessible name (none: decorative); `test`,
 * `placeholderTest`: their `data-test`.
 */
export function avatarView({ url, name, size = 'large', alt = '', label = '', id = null, test = 'avatar', placeholderTest = 'avatar-placeholder' }) {
  const classes = ['avatar', `avatar-${size}`];
  if (url) {
    const pixels = size === 'small' ? 40 : 96;
    return h('img', { class: classes, src: url, alt, width: pixels, height: pixels, decoding: 'async', id, dataset: { test } });
  }
  return h(
    'span',
    {
      class: [...classes, 'avatar-placeholder', `avatar-hue-${hue(name)}`],
      id,
      role: label ? 'img' : null,
      'aria-label': label || null,
      'aria-hidden': label ? null : 'true',
      dataset: { test: placeholderTest },
    },
    initial(name),
  );
}

function formatMegabytes(bytes) {
  return `${Math.round(bytes / (1024 * 1024))} MB`;
}

/**
 * The picture with its controls. `path`: the API's `…/avatar`; `url`: the current picture's
 * address (null: none); `name`: whose (for the placeholder's letter); `prefix`: the ids
 * (`#<prefix>` the block, `-image`/`-placeholder`, `-change`, `-file`, `-remove`, `-status`,
 * `-hint`); `error`: the error area refusals go to; `alt`/`label`: the image's text and the
 * placeholder's name; `heading`: what stands beside the picture above the controls (a page's
 * title); `onChange(url)`: after an upload or removal.
 *
 * Returns `{el, status}`; `status` is the status area, for the caller to place.
 */
export function avatarEditor({ path, url, name, prefix, error, alt, label, ctx, heading = null, onChange = () => {} }) {
  let current = url || null;
  let working = false;
  const status = statusArea(`${prefix}-status`);
  const frame = h('div', { class: 'avatar-frame' });
  const input = h('input', {
    type: 'file',
    id: `${prefix}-file`,
    class: 'visually-hidden',
    accept: PICTURE_TYPES,
    'aria-describedby': `${prefix}-hint`,
    dataset: { test: `${prefix}-file` },
  });
  const change = h('label', { class: 'btn btn-small btn-ghost file-button', id: `${prefix}-change`, dataset: { test: `${prefix}-change` } }, t('avatar.change'), input);
  const remove = h('button', { type: 'button', id: `${prefix}-remove`, class: 'btn btn-small btn-danger-ghost', dataset: { test: `${prefix}-remove` } }, t('avatar.remove'));
  const hint = h('p', { class: 'hint avatar-hint', id: `${prefix}-hint` }, t('avatar.hint', { max: formatMegabytes(MAX_PICTURE_BYTES) }));
  const el = h(
    'div',
    { class: 'avatar-editor', id: prefix, dataset: { test: prefix } },
    frame,
    h('div', { class: 'avatar-body' }, heading, h('div', { class: 'avatar-buttons' }, change, remove), hint),
  );

  function show() {
    const image = `${prefix}-image`;
    const placeholder = `${prefix}-placeholder`;
    clear(frame, avatarView({ url: current, name, size: 'large', alt, label, id: current ? image : placeholder, test: image, placeholderTest: placeholder }));
    el.dataset.state = current ? 'picture' : 'none';
    remove.hidden = !current;
  }

  function setWorking(on) {
    working = on;
    input.disabled = on;
    remove.disabled = on;
    if (on) change.setAttribute('aria-busy', 'true');
    else change.removeAttribute('aria-busy');
  }

  async function upload(file) {
    if (!file || working) return;
    error.clear();
    if (file.size > MAX_PICTURE_BYTES) {
      error.set(t('avatar.tooLarge', { file: file.name, max: formatMegabytes(MAX_PICTURE_BYTES) }));
      return;
    }
    setWorking(true);
    status.set(t('avatar.uploading', { file: file.name }), { fade: false });
    const form = new FormData();
    form.append('file', file, file.name);
    try {
      const stored = await api.put(path, form, { signal: ctx.signal });
      if (!ctx.active) return;
      current = pictureUrl(stored.url, stored.etag);
      show();
      status.set(t('avatar.saved'));
      onChange(current);
    } catch (problem) {
      if (problem?.name === 'AbortError' || problem?.redirected) return;
      status.set('');
      error.set(t('avatar.refused', { file: file.name, message: problem.message }));
    } finally {
      setWorking(false);
      // The same file chosen again is a new choice.
      input.value = '';
    }
  }

  input.addEventListener('change', () => upload(input.files?.[0]));

  remove.addEventListener('click', async () => {
    if (working) return;
    const confirmed = await confirmDialog({ title: t('avatar.remove.title'), message: t('avatar.remove.body'), confirmLabel: t('avatar.remove'), danger: true });
    if (!confirmed || !ctx.active) return;
    error.clear();
    setWorking(true);
    try {
      await api.delete(path, undefined, { signal: ctx.signal });
    } catch (problem) {
      // Already gone (another tab) is what was asked for.
      if (!(problem instanceof ApiProblem && problem.status === 404)) {
        if (problem?.name !== 'AbortError' && !problem?.redirected) error.set(problem.message);
        return;
      }
    } finally {
      setWorking(false);
    }
    if (!ctx.active) return;
    current = null;
    show();
    status.set(t('avatar.removed'));
    onChange(null);
    // The button that had the focus is gone: give it to the control that is left.
    input.focus();
  });

  show();
  return { el, status };
}

/**
 * The address of the user's own picture, or null when there is none. `GET /v1/me` does not name
 * it, so it is asked with `HEAD /v1/me/avatar` (its tag, no image bytes), never with an <img>
 * that might be a 404.
 */
export async function myPictureUrl(signal) {
  const headers = await api.head('/v1/me/avatar', { signal });
  if (!headers) return null;
  const etag = (headers.get('ETag') || '').replace(/^W\//, '').replace(/"/g, '');
  return pictureUrl('/v1/me/avatar', etag || String(Date.now()));
}
