// Live progress of a character's generation job: /characters/<id>/generating?job=<job id>.
//
// The received state (ticked steps, status, last event id) is kept in sessionStorage under the
// job id, so a reload re-renders it at once and resumes the stream after the last event seen.

import { api, ApiProblem, streamJob } from '../api.js';
import { h, formatElapsed, sleep, stored } from '../dom.js';
import { t } from '../i18n.js';
import { generationJobKey } from '../state.js';
import { errorArea, busy, confirmDialog } from '../components.js';
import { GENERATION_STEPS, categoryLabel, SOURCE_CATEGORY } from '../profile.js';

const stateKey = (jobId) => `fastnpc.job.${jobId}`;

/** The step a job whose source is fetched (not pasted) reports first, before the categories. */
const FETCHING_STEP = 'fetching';
/** Failure codes of a fetched source, each with a friendly message (`generating.error.<code>`). */
const SOURCE_ERRORS = new Set(['source_not_found', 'source_unavailable', 'source_blocked', 'source_too_short', 'source_ambiguous']);
/** Source failures a retry of the same job cannot mend: the character is to be created again. */
const CREATE_AGAIN = new Set(['source_not_found', 'source_blocked', 'source_too_short', 'source_ambiguous']);

function stepLabel(step) {
  if (step === FETCHING_STEP) return t('generating.step.fetching');
  if (step === SOURCE_CATEGORY) return t('generating.step.source');
  return categoryLabel(step);
}

/** What a failed job says: a friendly sentence for the source codes, and the server's message. */
function failureMessage(failure) {
  const code = failure?.code;
  const message = failure?.message;
  if (code && SOURCE_ERRORS.has(code)) {
    const friendly = t(`generating.error.${code}`);
    return message ? t('generating.error.withDetails', { friendly, message }) : friendly;
  }
  return message || t('generating.failed');
}

export async function render(root, ctx) {
  const characterId = ctx.params.id;
  let jobId = ctx.query.get('job');
  if (!jobId) {
    const remembered = stored.get(localStorage, generationJobKey(characterId));
    if (remembered) {
      jobId = remembered;
      history.replaceState(null, '', `${location.pathname}?job=${encodeURIComponent(jobId)}`);
    }
  }
  ctx.setTitle(t('generating.title'));

  const state = (jobId && stored.get(sessionStorage, stateKey(jobId))) || { lastId: null, steps: [], done: 0, total: GENERATION_STEPS.length, status: 'queued', terminal: null, error: null, startedAt: Date.now() };
  const save = () => jobId && stored.set(sessionStorage, stateKey(jobId), state);

  // ---- view
  const title = h('h1', { id: 'generating-title' }, t('generating.title'));
  const statusText = h('span', { id: 'job-status', dataset: { test: 'job-status' } });
  const elapsed = h('span', { id: 'elapsed', dataset: { test: 'elapsed' } }, '0:00');
  const bar = h('progress', { id: 'progress-bar', dataset: { test: 'progress-bar' }, max: state.total, value: state.done, 'aria-labelledby': 'progress-label' });
  const countText = h('span', { id: 'progress-count', dataset: { test: 'progress-count' } });
  const connection = h('span', { id: 'stream-connection', class: 'muted', dataset: { test: 'stream-connection' } });
  const steps = h('ol', { id: 'progress-steps', class: 'steps', dataset: { test: 'progress-steps' } });
  const error = errorArea('job-error');
  const cancel = h('button', { type: 'button', id: 'cancel-job', class: 'btn btn-danger-ghost', dataset: { test: 'cancel-job' } }, t('generating.cancel'));
  const retry = h('button', { type: 'button', id: 'retry-job', class: 'btn btn-primary', hidden: true, dataset: { test: 'retry-job' } }, t('common.retry'));
  const deleteButton = h('button', { type: 'button', id: 'delete-character', class: 'btn btn-danger-ghost', hidden: true, dataset: { test: 'delete-character' } }, t('common.delete'));
  const note = h('p', { class: 'muted hint', id: 'generating-note' }, t('generating.note'));
  const viewLink = h('a', { href: `/characters/${encodeURIComponent(characterId)}`, id: 'view-character', class: 'btn btn-ghost', dataset: { test: 'view-character' } }, t('generating.viewCharacter'));
  const createAgain = h('a', { href: '/characters/new', id: 'create-again', class: 'btn btn-primary', hidden: true, dataset: { test: 'create-again' } }, t('generating.createAgain'));

  root.append(
    h('div', { class: 'page-head' }, title),
    h(
      'section',
      { class: 'card progress-card', 'aria-labelledby': 'generating-title' },
      h(
        'div',
        { class: 'progress-summary', 'aria-live': 'polite', id: 'progress-summary' },
        h('p', { class: 'progress-line' }, h('span', { id: 'progress-label' }, t('generating.overall')), ' ', countText, ' · ', statusText),
        bar,
        h('p', { class: 'muted' }, t('generating.elapsed'), ' ', elapsed, ' ', connection),
      ),
      steps,
      error.el,
      h('div', { class: 'form-actions' }, cancel, retry, createAgain, deleteButton, viewLink),
    ),
    note,
  );

  const rows = new Map();
  let progressMarked = false; // the first progress event was marked (User Timing)
  let sourceFetched = false; // the character has its source snapshot (a retried job fetches nothing)
  function row(step) {
    if (!rows.has(step)) {
      const li = h('li', { class: 'step', dataset: { test: 'progress-step', step, state: 'pending' } }, h('span', { class: 'step-icon', 'aria-hidden': 'true' }), h('span', { class: 'step-label' }, stepLabel(step)), h('span', { class: 'step-state visually-hidden' }));
      rows.set(step, li);
      // Fetching the source comes before the categories.
      if (step === FETCHING_STEP) steps.prepend(li);
      else steps.append(li);
    }
    return rows.get(step);
  }
  GENERATION_STEPS.forEach(row);

  /** The state of a step's row: `done`, `pending`, or `failed` (the fetching row only). */
  function stepState(step) {
    if (state.terminal === 'succeeded') return 'done';
    if (step !== FETCHING_STEP) return state.steps.includes(step) ? 'done' : 'pending';
    // The source is fetched once the first category arrives.
    if (sourceFetched || state.steps.some((s) => s !== FETCHING_STEP)) return 'done';
    if (state.terminal === 'failed' && SOURCE_ERRORS.has(state.error?.code)) return 'failed';
    return 'pending';
  }

  function paint() {
    for (const step of state.steps) row(step);
    for (const [step, li] of rows) {
      const stepNow = stepState(step);
      li.dataset.state = stepNow;
      li.querySelector('.step-state').textContent = t(stepNow === 'done' ? 'generating.stepDone' : stepNow === 'failed' ? 'generating.stepFailed' : 'generating.stepPending');
    }
    const total = state.total || GENERATION_STEPS.length;
    bar.max = total;
    bar.value = state.terminal === 'succeeded' ? total : Math.min(state.done, total);
    countText.textContent = t('generating.count', { done: state.terminal === 'succeeded' ? total : state.done, total });
    statusText.textContent = t(`job.${state.terminal || state.status}`, {}, state.terminal || state.status);
    statusText.dataset.status = state.terminal || state.status;
    const over = Boolean(state.terminal);
    cancel.hidden = over;
    note.hidden = over;
    retry.hidden = !(state.terminal === 'failed' || state.terminal === 'cancelled');
    deleteButton.hidden = retry.hidden;
    createAgain.hidden = !(state.terminal === 'failed' && CREATE_AGAIN.has(state.error?.code));
    error.el.dataset.code = state.terminal === 'failed' ? state.error?.code || '' : '';
    if (state.terminal === 'failed') error.set(failureMessage(state.error));
    else if (state.terminal === 'cancelled') error.set(t('generating.cancelled'));
  }

  // ---- elapsed time
  let startedAt = state.startedAt || Date.now();
  let finishedAt = null;
  const tick = () => {
    elapsed.textContent = formatElapsed((finishedAt || Date.now()) - startedAt);
  };
  const timer = setInterval(tick, 1000);
  ctx.onCleanup(() => clearInterval(timer));

  paint();
  tick();

  // ---- actions
  cancel.addEventListener('click', () =>
    busy(cancel, async () => {
      error.clear();
      try {
        const answer = await api.post(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`);
        if (answer?.job?.status === 'cancelled' && !state.terminal) {
          connection.textContent = t('generating.cancelling');
        }
      } catch (problem) {
        if (problem?.name !== 'AbortError') error.set(problem.message);
      }
    }),
  );

  retry.addEventListener('click', () =>
    busy(retry, async () => {
      try {
        const answer = await api.post(`/v1/jobs/${encodeURIComponent(jobId)}/retry`);
        stored.remove(sessionStorage, stateKey(jobId));
        stored.set(localStorage, generationJobKey(characterId), answer.job.id);
        ctx.navigate(`/characters/${encodeURIComponent(characterId)}/generating?job=${encodeURIComponent(answer.job.id)}`, { replace: true });
      } catch (problem) {
        if (problem?.name !== 'AbortError') error.set(problem.message);
      }
    }),
  );

  deleteButton.addEventListener('click', async () => {
    const confirmed = await confirmDialog({ title: t('characters.delete.title', { name: title.dataset.name || '' }), message: t('characters.delete.body'), confirmLabel: t('common.delete'), danger: true });
    if (!confirmed) return;
    try {
      await api.delete(`/v1/characters/${encodeURIComponent(characterId)}`);
    } catch (problem) {
      if (!(problem instanceof ApiProblem && problem.status === 404)) return error.set(problem.message);
    }
    stored.remove(localStorage, generationJobKey(characterId));
    if (jobId) stored.remove(sessionStorage, stateKey(jobId));
    ctx.navigate('/', { replace: true });
  });

  // ---- what the server says now (the character's name; 404 → not-found page)
  if (!jobId) {
    // The API may name the character's job; then the full view is possible after all.
    const { character, job } = await api.get(`/v1/characters/${encodeURIComponent(characterId)}`, { signal: ctx.signal });
    const named = job?.id || character.job?.id;
    if (named && ctx.active) {
      ctx.navigate(`/characters/${encodeURIComponent(characterId)}/generating?job=${encodeURIComponent(named)}`, { replace: true });
      return;
    }
  }
  const characterPromise = api.get(`/v1/characters/${encodeURIComponent(characterId)}`, { signal: ctx.signal });
  const jobPromise = jobId ? api.get(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal: ctx.signal }) : Promise.resolve(null);
  const [{ character }, jobAnswer] = await Promise.all([characterPromise, jobPromise]);
  title.textContent = t('generating.titleNamed', { name: character.name });
  title.dataset.name = character.name;
  // A fetched source: its row is there from the start, done when the character already has it.
  if (character.source?.kind && character.source.kind !== 'text') row(FETCHING_STEP);
  sourceFetched = Boolean(character.source_snapshot);
  paint();
  ctx.setTitle(t('generating.titleNamed', { name: character.name }));
  const job = jobAnswer?.job;
  if (job) {
    const created = Date.parse(job.created_at);
    if (!Number.isNaN(created)) startedAt = Math.min(created, Date.now());
    if (job.finished_at) finishedAt = Date.parse(job.finished_at) || null;
    state.startedAt = startedAt;
    if (!state.terminal && job.progress) {
      state.total = job.progress.total || state.total;
      state.done = Math.max(state.done, job.progress.done || 0);
    }
    if (!state.terminal) state.status = job.status;
    save();
    paint();
    tick();
  }

  if (!jobId) {
    // No job known in this browser (the character was created elsewhere): follow the
    // character's status instead, without step details.
    pollCharacter(character);
    return;
  }

  if (character.status === 'ready' && job?.status === 'succeeded') {
    finish();
    return;
  }

  follow();

  function finish() {
    stored.remove(sessionStorage, stateKey(jobId));
    stored.remove(localStorage, generationJobKey(characterId));
    ctx.navigate(`/characters/${encodeURIComponent(characterId)}`, { replace: true });
  }

  async function follow() {
    try {
      const terminal = await streamJob(jobId, {
        signal: ctx.signal,
        after: state.lastId,
        onStatus: (s) => {
          connection.textContent = s === 'reconnecting' ? t('stream.reconnecting') : '';
        },
        onEvent: (event) => {
          // User Timing for the web benchmark (tests/src/bin/webbench.rs): the first progress
          // event of the page, when it arrives and in the frame that paints its row.
          const firstProgress = event.type === 'progress' && !progressMarked;
          if (firstProgress) {
            progressMarked = true;
            performance.mark('fastnpc:progress-received');
          }
          if (event.id !== null) state.lastId = event.id;
          const data = event.data || {};
          switch (event.type) {
            case 'status':
              state.status = data.status || state.status;
              break;
            case 'progress': {
              if (data.step && !state.steps.includes(data.step)) state.steps.push(data.step);
              // `done` counts categories (the fetching step says 0).
              const done = Number(data.done);
              state.done = Math.max(state.done, Number.isFinite(done) ? done : state.steps.filter((s) => s !== FETCHING_STEP).length);
              if (data.total) state.total = Number(data.total);
              break;
            }
            case 'succeeded':
              state.terminal = 'succeeded';
              break;
            case 'failed':
              state.terminal = 'failed';
              state.error = { code: data.code, message: data.message };
              break;
            case 'cancelled':
              state.terminal = 'cancelled';
              break;
            default:
              break;
          }
          if (state.terminal) finishedAt = Date.now();
          save();
          paint();
          tick();
          if (firstProgress) requestAnimationFrame(() => performance.mark('fastnpc:progress-shown'));
        },
      });
      if (!ctx.active || !terminal) return;
      if (terminal.type === 'succeeded') finish();
      else {
        retry.focus();
      }
    } catch (problem) {
      if (problem?.name === 'AbortError' || !ctx.active) return;
      error.set(problem.message);
    }
  }

  async function pollCharacter(current) {
    bar.removeAttribute('value');
    countText.textContent = '';
    cancel.hidden = true;
    connection.textContent = t('generating.noJob');
    let status = current.status;
    while (ctx.active) {
      if (status === 'ready') {
        ctx.navigate(`/characters/${encodeURIComponent(characterId)}`, { replace: true });
        return;
      }
      if (status === 'failed') {
        state.terminal = 'failed';
        error.set(t('generating.failedNoJob'));
        statusText.textContent = t('job.failed');
        deleteButton.hidden = false;
        bar.value = 0;
        return;
      }
      statusText.textContent = t('status.generating');
      await sleep(2000, ctx.signal);
      if (!ctx.active) return;
      try {
        status = (await api.get(`/v1/characters/${encodeURIComponent(characterId)}`, { signal: ctx.signal })).character.status;
      } catch (problem) {
        if (problem?.name === 'AbortError') return;
        if (problem instanceof ApiProblem && problem.status === 404) return ctx.reload();
      }
    }
  }
}
