// Small DOM helpers. Everything the app shows is built with createElement and textContent:
// no innerHTML, so text from users and from the model can never become markup.

import { getLang } from './i18n.js';

// Properties set as DOM properties rather than attributes.
const PROPS = new Set(['value', 'checked', 'selected', 'indeterminate', 'defaultValue']);

/**
 * h('button', {class: 'btn', onclick: fn, dataset: {test: 'x'}}, 'text', child, [more])
 * Attributes with null/undefined/false are skipped; true sets a boolean attribute.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
      else if (key === 'dataset') {
        for (const [k, v] of Object.entries(value)) if (v !== null && v !== undefined) el.dataset[k] = String(v);
      } else if (key === 'text') el.textContent = value;
      else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2).toLowerCase(), value);
      else if (PROPS.has(key)) el[key] = value;
      else if (value === true) el.setAttribute(key, '');
      else el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children: nodes, strings, numbers, arrays of them; null/false are skipped. */
export function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces an element's children. */
export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** Shows or hides an element (the `hidden` attribute). */
export function show(el, visible) {
  el.hidden = !visible;
}

function locale() {
  return getLang() === 'zh' ? 'zh-CN' : 'en';
}

/** A date-time in the UI language. */
export function formatDateTime(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'short' }).format(date);
}

/** A time of day (today) or date and time (earlier). */
export function formatTime(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const now = new Date();
  const sameDay = date.toDateString() === now.toDateString();
  const options = sameDay ? { timeStyle: 'short' } : { dateStyle: 'short', timeStyle: 'short' };
  return new Intl.DateTimeFormat(locale(), options).format(date);
}

/** A number in the UI language. */
export function formatNumber(n) {
  return new Intl.NumberFormat(locale()).format(n ?? 0);
}

/** Elapsed milliseconds as m:ss (or h:mm:ss). */
export function formatElapsed(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, '0');
  return hours ? `${hours}:${String(minutes).padStart(2, '0')}:${seconds}` : `${minutes}:${seconds}`;
}

/** Number of Unicode code points (what the server counts as characters). */
export function charCount(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** A random id for Idempotency-Key headers (works outside secure contexts too). */
export function randomId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A promise that resolves after `ms`, or early (without rejecting) when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** JSON in sessionStorage/localStorage that never throws (private mode, quota, bad data). */
export const stored = {
  get(storage, key, fallback = null) {
    try {
      const raw = storage.getItem(key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  },
  set(storage, key, value) {
    try {
      storage.setItem(key, JSON.stringify(value));
    } catch {
      /* storage full or unavailable: the page still works, it only forgets on reload */
    }
  },
  remove(storage, key) {
    try {
      storage.removeItem(key);
    } catch {
      /* ignore */
    }
  },
};

/**
 * Where a login may send the person back to (`?next=`): a path of this app on this origin, or
 * `/` for anything else — another origin (`//evil.example`, `/\tevil`, which URL parsing turns
 * into one), the API, the login pages themselves.
 */
export function safeNext(next) {
  if (typeof next !== 'string' || !next.startsWith('/')) return '/';
  let url;
  try {
    url = new URL(next, location.origin);
  } catch {
    return '/';
  }
  if (url.origin !== location.origin) return '/';
  const path = url.pathname;
  if (/^\/(v1|assets)(\/|$)/.test(path) || path.startsWith('/login') || path.startsWith('/register')) return '/';
  return path + url.search + url.hash;
}
