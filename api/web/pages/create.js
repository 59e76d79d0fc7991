// Create a character: name, a source (only pasted text for now), optional language. On submit
// the generation job starts and the progress page follows it.

import { api, ApiProblem } from '../api.js';
import { h, clear, charCount, randomId, stored } from '../dom.js';
import { t } from '../i18n.js';
import { limits, MIN_SOURCE_CHARS, generationJobKey } from '../state.js';
import { errorArea, field, busy, lengthCounter } from '../components.js';

/**
 * Source kinds the form offers. Each renders its own inputs and builds the API's `source`
 * object ({kind, ...}); adding an encyclopedia kind is one more entry here.
 */
const SOURCE_KINDS = [
  {
    kind: 'text',
    label: () => t('create.source.text'),
    mount(container, lim) {
      const text = h('textarea', {
        id: 'source-text', name: 'source-text', rows: 12, required: true, maxlength: lim.source_chars,
        dataset: { test: 'source-text' }, placeholder: t('create.source.placeholder'),
      });
      const counter = lengthCounter(text, lim.source_chars, 'source-count');
      clear(
        container,
        field(t('create.source.textLabel'), text, t('create.source.hint', { min: MIN_SOURCE_CHARS, max: lim.source_chars.toLocaleString() })),
        h('p', { class: 'counter-line' }, counter.el),
      );
      return {
        focus: () => text.focus(),
        /** An error message, or null when the input is acceptable. */
        validate() {
          const n = charCount(text.value.trim());
          if (n === 0) return { message: t('create.error.sourceEmpty'), control: text };
          if (n < MIN_SOURCE_CHARS) return { message: t('create.error.sourceShort', { min: MIN_SOURCE_CHARS, n }), control: text };
          if (charCount(text.value) > lim.source_chars) return { message: t('create.error.sourceLong', { max: lim.source_chars.toLocaleString() }), control: text };
          return null;
        },
        source: () => ({ kind: 'text', text: text.value }),
      };
    },
  },
];

export async function render(root, ctx) {
  ctx.setTitle(t('create.title'));
  const lim = limits();
  let idempotencyKey = randomId();

  const name = h('input', { id: 'character-name', name: 'name', type: 'text', required: true, maxlength: lim.name_chars, autocomplete: 'off', dataset: { test: 'character-name' } });
  const kind = h(
    'select',
    { id: 'source-kind', name: 'source-kind', dataset: { test: 'source-kind' } },
    SOURCE_KINDS.map((k) => h('option', { value: k.kind }, k.label())),
  );
  const language = h(
    'select',
    { id: 'character-language', name: 'language', dataset: { test: 'character-language' } },
    h('option', { value: '' }, t('create.language.auto')),
    h('option', { value: 'zh' }, t('lang.zh')),
    h('option', { value: 'en' }, t('lang.en')),
  );
  const sourceArea = h('div', { class: 'source-inputs', id: 'source-inputs' });
  const error = errorArea('create-error');
  const submit = h('button', { type: 'submit', id: 'create-submit', class: 'btn btn-primary', dataset: { test: 'create-submit' } }, t('create.submit'));

  let sourceInput = null;
  const mountKind = () => {
    const spec = SOURCE_KINDS.find((k) => k.kind === kind.value) || SOURCE_KINDS[0];
    sourceInput = spec.mount(sourceArea, lim);
  };
  kind.addEventListener('change', mountKind);

  const form = h(
    'form',
    { id: 'create-character-form', class: 'card form', novalidate: true, dataset: { test: 'create-character-form' } },
    field(t('create.name'), name, t('create.name.hint', { max: lim.name_chars })),
    h(
      'fieldset',
      { class: 'fieldset' },
      h('legend', null, t('create.source')),
      field(t('create.source.kind'), kind),
      sourceArea,
    ),
    field(t('create.language'), language, t('create.language.hint')),
    error.el,
    h('div', { class: 'form-actions' }, submit, h('a', { href: '/', class: 'btn btn-ghost' }, t('common.cancel'))),
  );
  root.append(h('div', { class: 'page-head' }, h('h1', null, t('create.title'))), h('p', { class: 'lead' }, t('create.lead')), form);
  mountKind();

  let submitMarked = false;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    // User Timing for the web benchmark (tests/src/bin/webbench.rs): the first submit only.
    if (!submitMarked) {
      submitMarked = true;
      performance.mark('fastnpc:create-submitted');
    }
    error.clear();
    const trimmed = name.value.trim();
    if (!trimmed) return fail(t('create.error.nameEmpty'), name);
    if (charCount(trimmed) > lim.name_chars) return fail(t('create.error.nameLong', { max: lim.name_chars }), name);
    const invalid = sourceInput.validate();
    if (invalid) return fail(invalid.message, invalid.control);
    const body = { name: trimmed, source: sourceInput.source() };
    if (language.value) body.language = language.value;
    await busy(submit, async () => {
      try {
        const created = await api.post('/v1/characters', body, { headers: { 'Idempotency-Key': idempotencyKey } });
        const character = created.character;
        const job = created.job;
        stored.set(localStorage, generationJobKey(character.id), job.id);
        ctx.navigate(`/characters/${encodeURIComponent(character.id)}/generating?job=${encodeURIComponent(job.id)}`);
      } catch (problem) {
        if (problem?.name === 'AbortError') return;
        // A refused request may be corrected and sent again: that is a new request.
        if (problem instanceof ApiProblem && problem.status >= 400 && problem.status < 500) idempotencyKey = randomId();
        error.set(problem.message);
      }
    });
  });

  function fail(message, control) {
    error.set(message);
    control.focus();
  }
}
