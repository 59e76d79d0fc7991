// The one API client every page uses.
//
//   api.get(path), api.post(path, body), api.put / api.patch / api.delete(path, body)
//     → parsed JSON, or null for 204. Non-2xx → throws ApiProblem. A 401 (except from the login
//     call itself) also sends the person to /login?next=<where they were>. A body that is a
//     FormData or a Blob (a file) is sent as it is; anything else as JSON.
//   api.download(path, options) → {blob, filename, type}: a file the API answers (not JSON),
//     with the same credentials and errors.
//   api.head(path, options) → the response's Headers, or null for a 404 (is it there?).
//   streamJob(jobId, {onEvent, signal, after, onStatus}) → a job's Server-Sent Events, read with
//     fetch (so the session cookie goes along), resumed with Last-Event-ID after a dropped
//     connection. All reconnect logic lives here.
//
// The session is an HttpOnly cookie set by the server: nothing here ever sees or stores it.

import { t } from './i18n.js';
import { sleep } from './dom.js';

/** An RFC 9457 problem (or a network failure) as an Error. `message` is what people see. */
export class ApiProblem extends Error {
  constructor({ status = 0, title = '', detail = '', code = '', problem = null } = {}) {
    super(detail || title || t('error.unknown'));
    this.name = 'ApiProblem';
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.code = code;
    this.problem = problem;
    /** True when the 401 handler already sent the person to the login page. */
    this.redirected = false;
  }
}

let unauthorizedHandler = null;

/** The app registers what a 401 does (go to the login page). */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

function problemFrom(response, body, path) {
  const doc = body && typeof body === 'object' ? body : null;
  const type = doc?.type ? String(doc.type) : '';
  const code = doc?.code ? String(doc.code) : type.startsWith('/problems/') ? type.slice('/problems/'.length) : '';
  let detail = doc?.detail ? String(doc.detail) : '';
  let title = doc?.title ? String(doc.title) : '';
  if (!doc) {
    // Not a problem document (a proxy's error page, an empty body): say what we know.
    title = response.status >= 500 ? t('error.server', { status: response.status }) : t('error.status', { status: response.status });
    if (typeof body === 'string' && body.length && body.length < 300 && !body.trimStart().startsWith('<')) detail = body;
  }
  if (response.status === 404 && !detail) detail = t('error.notFound');
  const problem = new ApiProblem({ status: response.status, title, detail, code, problem: doc });
  problem.path = path;
  return problem;
}

function networkProblem(error) {
  const problem = new ApiProblem({ status: 0, title: t('error.network.title'), detail: t('error.network'), code: 'network' });
  problem.cause = error;
  return problem;
}

function handle401(problem, path) {
  if (path === '/v1/auth/login' || path === '/v1/auth/register') return;
  if (unauthorizedHandler) {
    problem.redirected = unauthorizedHandler() !== false;
  }
}

async function request(method, path, body, options = {}) {
  const headers = { Accept: 'application/json', ...(options.headers || {}) };
  const init = { method, headers, credentials: 'same-origin', signal: options.signal, cache: 'no-store' };
  if (body instanceof FormData || body instanceof Blob) {
    // The browser writes the form's boundary (or the file's type) itself.
    init.body = body;
  } else if (body !== undefined && body !== null) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error?.name === 'AbortError') throw error;
    throw networkProblem(error);
  }
  if (response.status === 204 || response.status === 205) return null;
  let text;
  try {
    text = await response.text();
  } catch (error) {
    if (error?.name === 'AbortError') throw error;
    throw networkProblem(error);
  }
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const problem = problemFrom(response, data, path);
    if (response.status === 401 && !options.noRedirect) handle401(problem, path);
    throw problem;
  }
  if (typeof data === 'string') {
    // A 2xx that is not JSON: the server answered something else (e.g. the entry page for an
    // unknown path). Treat it as a failure rather than handing pages a string.
    throw new ApiProblem({ status: response.status, title: t('error.unexpected'), detail: t('error.unexpected'), code: 'not-json' });
  }
  return data;
}

/** The file name of a `Content-Disposition` header (`filename*=UTF-8''…` preferred), or ''. */
export function dispositionFilename(header) {
  if (!header) return '';
  const extended = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (extended) {
    try {
      return decodeURIComponent(extended[1].trim());
    } catch {
      /* fall through to the plain name */
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;]+)/i.exec(header);
  return plain ? (plain[1] ?? plain[2] ?? '').trim() : '';
}

/** GET a file (an image, a JSON document to save): `{blob, filename, type}`; errors as `request`. */
async function download(path, options = {}) {
  const init = { method: 'GET', headers: { Accept: '*/*' }, credentials: 'same-origin', signal: options.signal, cache: 'no-store' };
  let response;
  let blob;
  try {
    response = await fetch(path, init);
    blob = await response.blob();
  } catch (error) {
    if (error?.name === 'AbortError') throw error;
    throw networkProblem(error);
  }
  if (!response.ok) {
    let data = null;
    try {
      const text = await blob.text();
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    const problem = problemFrom(response, data, path);
    if (response.status === 401 && !options.noRedirect) handle401(problem, path);
    throw problem;
  }
  const type = response.headers.get('Content-Type') || blob.type || '';
  return { blob, type, filename: dispositionFilename(response.headers.get('Content-Disposition')) };
}

/**
 * HEAD `path`: its response headers when the API has it (2xx), null when it answers 404 (to ask
 * whether something is there without fetching it); other errors as `request`.
 */
async function head(path, options = {}) {
  const init = { method: 'HEAD', headers: { Accept: '*/*' }, credentials: 'same-origin', signal: options.signal, cache: 'no-store' };
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error?.name === 'AbortError') throw error;
    throw networkProblem(error);
  }
  if (response.status === 404) return null;
  if (!response.ok) {
    const problem = problemFrom(response, null, path);
    if (response.status === 401 && !options.noRedirect) handle401(problem, path);
    throw problem;
  }
  return response.headers;
}

export const api = {
  download,
  head,
  get: (path, options) => request('GET', path, undefined, options),
  post: (path, body, options) => request('POST', path, body, options),
  put: (path, body, options) => request('PUT', path, body, options),
  patch: (path, body, options) => request('PATCH', path, body, options),
  delete: (path, body, options) => request('DELETE', path, body, options),
};

/** Builds a query string from an object, skipping empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export const TERMINAL_EVENTS = new Set(['succeeded', 'failed', 'cancelled']);

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 15000;

/**
 * Follows a job's event stream until its terminal event.
 *
 * onEvent({id, type, data}) is called for every event (data is the parsed JSON payload).
 * after: the last event id already seen (resumes after it; 0 or absent: from the start).
 * onStatus(state): 'connecting' | 'open' | 'reconnecting' (for a connection indicator).
 *
 * Resolves with the terminal event, or null when `signal` aborted. Rejects with ApiProblem when
 * the server answers the stream with a 4xx (no retry). Network failures, 5xx answers and
 * streams that end without a terminal event are retried with a capped exponential backoff,
 * sending `Last-Event-ID: <last id seen>` so no event is repeated or lost.
 */
export async function streamJob(jobId, { onEvent, signal, after, onStatus } = {}) {
  const url = `/v1/jobs/${encodeURIComponent(jobId)}/events`;
  let lastId = after !== undefined && after !== null && String(after) !== '' ? String(after) : null;
  let failures = 0;
  const status = (state) => {
    try {
      onStatus?.(state);
    } catch (error) {
      console.error(error);
    }
  };
  status('connecting');
  while (!signal?.aborted) {
    const headers = { Accept: 'text/event-stream' };
    if (lastId !== null && lastId !== '0') headers['Last-Event-ID'] = lastId;
    let response;
    try {
      response = await fetch(url, { headers, credentials: 'same-origin', signal, cache: 'no-store' });
    } catch (error) {
      if (signal?.aborted) return null;
      failures++;
      status('reconnecting');
      await sleep(backoff(failures), signal);
      continue;
    }
    if (response.status >= 400 && response.status < 500) {
      let body = null;
      try {
        const text = await response.text();
        body = text ? JSON.parse(text) : null;
      } catch {
        body = null;
      }
      const problem = problemFrom(response, body, url);
      if (response.status === 401) handle401(problem, url);
      throw problem;
    }
    if (!response.ok || !response.body) {
      try {
        await response.body?.cancel();
      } catch {
        /* ignore */
      }
      failures++;
      status('reconnecting');
      await sleep(backoff(failures), signal);
      continue;
    }
    status('open');
    let terminal = null;
    try {
      terminal = await readEvents(response.body, (event) => {
        if (event.id !== null) lastId = event.id;
        failures = 0;
        try {
          onEvent?.(event);
        } catch (error) {
          console.error('stream event handler failed', error);
        }
      });
    } catch (error) {
      if (signal?.aborted) return null;
      // The connection dropped mid-stream: reconnect below.
    }
    if (terminal) return terminal;
    if (signal?.aborted) return null;
    failures++;
    status('reconnecting');
    await sleep(backoff(failures), signal);
  }
  return null;
}

function backoff(failures) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** Math.max(0, failures - 1));
  return base / 2 + Math.random() * (base / 2);
}

/**
 * Reads an SSE body (the WHATWG event-stream format): `field: value` lines, `:` comments, a
 * blank line ends an event. Returns the terminal event once one was dispatched, or null when
 * the body ended without one.
 */
async function readEvents(body, dispatch) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let data = [];
  let type = '';
  let id = null;
  let sawData = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return null;
      buffer += value;
      for (;;) {
        const match = /\r\n|\r|\n/.exec(buffer);
        if (!match) break;
        // A lone CR at the very end may be the first half of CRLF: wait for more.
        if (match[0] === '\r' && match.index === buffer.length - 1) break;
        const line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        if (line === '') {
          if (sawData) {
            const eventType = type || 'message';
            const raw = data.join('\n');
            let parsed;
            try {
              parsed = raw === '' ? null : JSON.parse(raw);
            } catch {
              parsed = raw;
            }
            const event = { id, type: eventType, data: parsed };
            dispatch(event);
            if (TERMINAL_EVENTS.has(eventType)) {
              try {
                await reader.cancel();
              } catch {
                /* ignore */
              }
              return event;
            }
          }
          data = [];
          type = '';
          id = null;
          sawData = false;
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        let fieldValue = colon === -1 ? '' : line.slice(colon + 1);
        if (fieldValue.startsWith(' ')) fieldValue = fieldValue.slice(1);
        if (field === 'data') {
          data.push(fieldValue);
          sawData = true;
        } else if (field === 'event') type = fieldValue;
        else if (field === 'id') {
          if (!fieldValue.includes('\0')) id = fieldValue;
        }
        // `retry:` and unknown fields are ignored: the backoff here is ours.
      }
    }
  } finally {
    try {
      reader.releaseLock();
    } catch {
      /* ignore */
    }
  }
}
