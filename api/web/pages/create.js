// Create a character: a name and a source — a Wikipedia article (the default), a Baidu Baike
// lemma, a web page, or pasted text — and an optional language. On submit the generation job
// starts and the progress page follows it.
//
// For the encyclopedias the name is also what is searched: "Search" (or Enter in the name)
// lists the entries it may mean (`GET /v1/sources/search`), and the chosen one is what the
// character is created from. Creating from a title the encyclopedia finds ambiguous answers 409
// with the same kind of list, shown in the same place.
//
// The pasted-text box is on the page whatever the kind: typing into it switches the kind to
// pasted text, so a text can be pasted without choosing the kind first.

import { api, ApiProblem, query } from '../api.js';
import { h, clear, charCount, randomId, stored } from '../dom.js';
import { t, getLang } from '../i18n.js';
import { limits, MIN_SOURCE_CHARS, generationJobKey } from '../state.js';
import { errorArea, busy, lengthCounter } from '../components.js';

/** Source kinds, in the order offered; the first is the default. */
const KINDS = ['wikipedia', 'baike', 'url', 'text'];
/** Kinds whose title can be searched and may be ambiguous. */
const SEARCHABLE = new Set(['wikipedia', 'baike']);
/** Wikipedia editions offered by name; any other code can be typed. */
const EDITIONS = ['zh', 'en', 'ja', 'fr', 'de'];
const OTHER_EDITION = 'other';
/** A Wikipedia language code as the server accepts it (`zh`, `en`, `zh-yue`, `simple`). */
const EDITION_CODE = /^[a-z]{2,12}(-[a-z]{2,12})*$/;
/** The server's limits on fetched sources (shared/src/domain/source.rs). */
const MAX_TITLE_CHARS = 255;
const MAX_URL_CHARS = 2048;

/** An http(s) URL, or null. */
function httpUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url : null;
  } catch {
    return null;
  }
}

export async function render(root, ctx) {
  ctx.setTitle(t('create.title'));
  const lim = limits();
  let idempotencyKey = randomId();

  // ---- controls
  const kind = h(
    'select',
    { id: 'source-kind', name: 'source-kind', dataset: { test: 'source-kind' } },
    KINDS.map((k) => h('option', { value: k }, t(`create.kind.${k}`))),
  );

  const uiEdition = getLang() === 'zh' ? 'zh' : 'en';
  const edition = h(
    'select',
    { id: 'source-lang', name: 'source-lang', dataset: { test: 'source-lang' } },
    EDITIONS.map((code) => h('option', { value: code, selected: code === uiEdition }, t('create.edition.option', { name: t(`create.edition.${code}`), code }))),
    h('option', { value: OTHER_EDITION }, t('create.edition.other')),
  );
  edition.value = uiEdition;
  const otherEdition = h('input', {
    id: 'source-lang-other', name: 'source-lang-other', type: 'text', maxlength: 24, autocomplete: 'off',
    spellcheck: 'false', autocapitalize: 'none', placeholder: t('create.edition.otherPlaceholder'), dataset: { test: 'source-lang-other' },
  });
  const otherEditionField = h('div', { class: 'field', id: 'source-lang-other-field', hidden: true }, h('label', { for: otherEdition.id }, t('create.edition.otherLabel')), otherEdition);
  const editionField = h(
    'div',
    { class: 'edition-row', id: 'source-lang-field' },
    h('div', { class: 'field' }, h('label', { for: edition.id }, t('create.edition')), edition),
    otherEditionField,
  );

  const name = h('input', { id: 'character-name', name: 'name', type: 'text', required: true, maxlength: lim.name_chars, autocomplete: 'off', dataset: { test: 'character-name' } });
  const searchButton = h('button', { type: 'button', id: 'source-search', class: 'btn', dataset: { test: 'source-search' } }, t('create.search'));
  const nameHint = h('p', { class: 'hint', id: 'character-name-hint' });
  name.setAttribute('aria-describedby', nameHint.id);
  const nameField = h('div', { class: 'field' }, h('label', { for: name.id }, t('create.name')), h('div', { class: 'search-row' }, name, searchButton), nameHint);

  // Search results and the 409's candidates.
  const searchStatus = h('p', { id: 'source-search-status', class: 'search-status', role: 'status', 'aria-live': 'polite', dataset: { test: 'source-search-status', state: 'idle' } });
  const searchError = errorArea('source-search-error');
  const candidateLegend = h('legend', { id: 'source-candidates-legend' });
  const candidateList = h('ul', { class: 'candidate-list', id: 'source-candidate-list' });
  const candidatesBox = h('fieldset', { class: 'candidates', id: 'source-candidates', hidden: true, dataset: { test: 'source-candidates' } }, candidateLegend, candidateList);
  const results = h('div', { class: 'source-results', id: 'source-results' }, searchStatus, searchError.el, candidatesBox);

  const url = h('input', {
    id: 'source-url', name: 'source-url', type: 'url', inputmode: 'url', maxlength: MAX_URL_CHARS, autocomplete: 'off',
    spellcheck: 'false', autocapitalize: 'none', placeholder: 'https://', dataset: { test: 'source-url' },
  });
  const urlHint = h('p', { class: 'hint', id: 'source-url-hint' }, t('create.url.hint'));
  url.setAttribute('aria-describedby', urlHint.id);
  const urlField = h('div', { class: 'field', id: 'source-url-field' }, h('label', { for: url.id }, t('create.url')), url, urlHint);

  const text = h('textarea', {
    id: 'source-text', name: 'source-text', rows: 12, maxlength: lim.source_chars,
    dataset: { test: 'source-text' }, placeholder: t('create.source.placeholder'),
  });
  const counter = lengthCounter(text, lim.source_chars, 'source-count');
  const textLabel = h('label', { for: text.id });
  const textHint = h('p', { class: 'hint', id: 'source-text-hint' });
  text.setAttribute('aria-describedby', textHint.id);
  const textField = h('div', { class: 'field source-text-field', id: 'source-text-field' }, textLabel, text, textHint, h('p', { class: 'counter-line' }, counter.el));

  const chosenLine = h('p', { class: 'hint chosen-line', id: 'source-chosen', hidden: true, dataset: { test: 'source-chosen' } });

  const language = h(
    'select',
    { id: 'character-language', name: 'language', dataset: { test: 'character-language' } },
    h('option', { value: '' }, t('create.language.auto')),
    h('option', { value: 'zh' }, t('lang.zh')),
    h('option', { value: 'en' }, t('lang.en')),
  );
  const languageHint = h('p', { class: 'hint', id: 'character-language-hint' }, t('create.language.hint'));
  language.setAttribute('aria-describedby', languageHint.id);

  const error = errorArea('create-error');
  const submit = h('button', { type: 'submit', id: 'create-submit', class: 'btn btn-primary', dataset: { test: 'create-submit' } }, t('create.submit'));

  const form = h(
    'form',
    { id: 'create-character-form', class: 'card form create-form', novalidate: true, dataset: { test: 'create-character-form', kind: kind.value } },
    h(
      'fieldset',
      { class: 'fieldset' },
      h('legend', null, t('create.source')),
      h('div', { class: 'field' }, h('label', { for: kind.id }, t('create.source.kind')), kind),
      editionField,
    ),
    nameField,
    results,
    urlField,
    textField,
    h('div', { class: 'field' }, h('label', { for: language.id }, t('create.language')), language, languageHint),
    chosenLine,
    error.el,
    h('div', { class: 'form-actions' }, submit, h('a', { href: '/', class: 'btn btn-ghost' }, t('common.cancel'))),
  );
  root.append(h('div', { class: 'page-head' }, h('h1', null, t('create.title'))), h('p', { class: 'lead' }, t('create.lead')), form);

  // ---- state: the listed candidates and the chosen one
  /** {kind, lang, list: [{title, id?, description, url}], chosen: index|null} */
  let shown = null;
  let searchSeq = 0;
  let searchController = null;
  ctx.onCleanup(() => searchController?.abort());

  const currentKind = () => (KINDS.includes(kind.value) ? kind.value : KINDS[0]);
  const kindName = (k, lang) => (k === 'wikipedia' ? t('create.in.wikipedia', { lang }) : t('create.in.baike'));
  const chosen = () => (shown && shown.chosen !== null ? shown.list[shown.chosen] : null);

  /** The Wikipedia edition, or an error message. */
  function editionCode() {
    if (edition.value !== OTHER_EDITION) return { code: edition.value };
    const code = otherEdition.value.trim().toLowerCase();
    if (!code) return { message: t('create.error.editionEmpty') };
    if (code.length > 24 || !EDITION_CODE.test(code)) return { message: t('create.error.edition', { code }) };
    return { code };
  }

  function applyKind() {
    const k = currentKind();
    form.dataset.kind = k;
    const searchable = SEARCHABLE.has(k);
    editionField.hidden = k !== 'wikipedia';
    otherEditionField.hidden = edition.value !== OTHER_EDITION;
    searchButton.hidden = !searchable;
    results.hidden = !searchable;
    urlField.hidden = k !== 'url';
    nameHint.textContent = searchable
      ? t(k === 'wikipedia' ? 'create.name.hintWikipedia' : 'create.name.hintBaike', { max: lim.name_chars })
      : t('create.name.hint', { max: lim.name_chars });
    // The text box is always there: the main field for pasted text, an alternative otherwise.
    const isText = k === 'text';
    text.rows = isText ? 12 : 4;
    text.required = isText;
    textField.classList.toggle('alternative', !isText);
    textLabel.textContent = isText ? t('create.source.textLabel') : t('create.source.textInstead');
    textHint.textContent = isText
      ? t('create.source.hint', { min: MIN_SOURCE_CHARS, max: lim.source_chars.toLocaleString() })
      : t('create.source.insteadHint');
    paintChosen();
  }

  /** Forgets the listed candidates (another kind or edition was chosen). */
  function resetResults() {
    searchSeq++;
    searchController?.abort();
    shown = null;
    clear(candidateList);
    candidatesBox.hidden = true;
    setSearchStatus('idle', '');
    searchError.clear();
    paintChosen();
  }

  function setSearchStatus(state, message) {
    searchStatus.dataset.state = state;
    searchStatus.textContent = message;
  }

  function paintChosen() {
    const entry = SEARCHABLE.has(currentKind()) ? chosen() : null;
    name.placeholder = entry ? entry.title : '';
    chosenLine.hidden = !entry;
    chosenLine.textContent = entry ? t('create.chosen', { title: entry.title, where: kindName(shown.kind, shown.lang) }) : '';
    for (const li of candidateList.children) li.dataset.chosen = String(Number(li.dataset.index) === shown?.chosen);
  }

  /** Shows `list` as choosable entries under `legend`; `ambiguous` when they come from a 409. */
  function showCandidates(list, { kind: k, lang, legend, state, message }) {
    shown = { kind: k, lang, list, chosen: null };
    clear(candidateList, list.map((candidate, index) => candidateItem(candidate, index, k)));
    candidateLegend.textContent = legend;
    candidatesBox.hidden = list.length === 0;
    setSearchStatus(state, message);
    paintChosen();
  }

  function candidateItem(candidate, index, k) {
    const radioId = `source-candidate-${index}`;
    const radio = h('input', { type: 'radio', name: 'source-candidate', id: radioId, value: String(index), dataset: { test: 'choose-candidate' } });
    radio.addEventListener('change', () => {
      if (!radio.checked || !shown) return;
      shown.chosen = index;
      error.clear();
      paintChosen();
    });
    const title = String(candidate.title || '');
    const description = String(candidate.description || '').trim();
    const label = h(
      'label',
      { for: radioId, class: 'candidate-body' },
      h('span', { class: 'candidate-title' }, title),
      k === 'baike' && candidate.id ? h('span', { class: 'candidate-id' }, t('create.candidate.id', { id: candidate.id })) : null,
      h('span', { class: ['candidate-desc', description ? '' : 'muted'] }, description || t('create.candidate.noDescription')),
    );
    const address = httpUrl(candidate.url || '');
    const link = address
      ? h(
          'a',
          {
            href: address.href, target: '_blank', rel: 'noopener noreferrer', class: 'candidate-link',
            dataset: { test: 'candidate-link' }, 'aria-label': t('create.candidate.openAria', { title }),
          },
          t('create.candidate.open'),
        )
      : null;
    return h(
      'li',
      { class: 'candidate', dataset: { test: 'source-candidate', index, title, id: candidate.id || null, chosen: 'false' } },
      radio,
      label,
      link,
    );
  }

  async function search() {
    const k = currentKind();
    if (!SEARCHABLE.has(k)) return;
    error.clear();
    searchError.clear();
    const q = name.value.trim();
    if (!q) {
      setSearchStatus('idle', '');
      searchError.set(t('create.error.searchEmpty'));
      name.focus();
      return;
    }
    let lang = null;
    if (k === 'wikipedia') {
      const picked = editionCode();
      if (picked.message) {
        searchError.set(picked.message);
        otherEdition.focus();
        return;
      }
      lang = picked.code;
    }
    const seq = ++searchSeq;
    searchController?.abort();
    const controller = new AbortController();
    searchController = controller;
    const where = kindName(k, lang);
    setSearchStatus('searching', t('create.searching', { q, where }));
    candidatesBox.setAttribute('aria-busy', 'true');
    await busy(searchButton, async () => {
      try {
        const answer = await api.get(`/v1/sources/search${query({ kind: k, lang, q })}`, { signal: controller.signal });
        if (seq !== searchSeq || !ctx.active) return;
        const list = Array.isArray(answer?.candidates) ? answer.candidates : [];
        if (list.length === 0) {
          showCandidates([], { kind: k, lang, legend: '', state: 'empty', message: t('create.nothingFound', { q, where }) });
        } else {
          showCandidates(list, { kind: k, lang, legend: t('create.candidates.choose'), state: 'found', message: t('create.found', { n: list.length, q, where }) });
        }
      } catch (problem) {
        if (problem?.name === 'AbortError' || seq !== searchSeq || !ctx.active) return;
        shown = null;
        clear(candidateList);
        candidatesBox.hidden = true;
        setSearchStatus('error', '');
        searchError.set(problem.message);
        paintChosen();
      } finally {
        if (seq === searchSeq) candidatesBox.removeAttribute('aria-busy');
      }
    });
  }

  // ---- events
  kind.addEventListener('change', () => {
    resetResults();
    applyKind();
  });
  edition.addEventListener('change', () => {
    otherEditionField.hidden = edition.value !== OTHER_EDITION;
    resetResults();
    if (edition.value === OTHER_EDITION) otherEdition.focus();
  });
  otherEdition.addEventListener('input', () => {
    if (shown) resetResults();
  });
  searchButton.addEventListener('click', search);
  const enterSearches = (event) => {
    // Enter searches (the encyclopedia kinds); not while an IME is composing a character.
    if (event.key !== 'Enter' || event.isComposing || event.keyCode === 229) return;
    if (!SEARCHABLE.has(currentKind())) return;
    event.preventDefault();
    search();
  };
  name.addEventListener('keydown', enterSearches);
  otherEdition.addEventListener('keydown', enterSearches);
  // Typing a text makes the source the pasted text.
  text.addEventListener('input', () => {
    if (currentKind() !== 'text' && text.value.trim() !== '') {
      kind.value = 'text';
      resetResults();
      applyKind();
    }
  });

  applyKind();

  // ---- submit
  let submitMarked = false;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    // User Timing for the web benchmark (tests/src/bin/webbench.rs): the first submit only.
    if (!submitMarked) {
      submitMarked = true;
      performance.mark('fastnpc:create-submitted');
    }
    error.clear();
    const built = build();
    if (built.message) return fail(built.message, built.control);
    const body = built.body;
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
        if (problem instanceof ApiProblem && problem.status === 409 && Array.isArray(problem.problem?.candidates) && SEARCHABLE.has(body.source.kind)) {
          return ambiguous(body.source, problem.problem.candidates);
        }
        error.set(problem.message);
      }
    });
  });

  /** The 409 of an ambiguous title: its entries, to choose from. */
  function ambiguous(source, list) {
    if (!ctx.active) return;
    const where = kindName(source.kind, source.lang);
    const message = t('create.ambiguous', { title: source.title, where });
    showCandidates(list, { kind: source.kind, lang: source.lang || null, legend: t('create.candidates.choose'), state: 'ambiguous', message });
    const first = candidateList.querySelector('input[type="radio"]');
    if (first) first.focus();
    else error.set(message);
  }

  /** The request body, or {message, control} saying what to correct. */
  function build() {
    const k = currentKind();
    const typed = name.value.trim();
    if (charCount(typed) > lim.name_chars) return { message: t('create.error.nameLong', { max: lim.name_chars }), control: name };
    if (SEARCHABLE.has(k)) {
      const entry = chosen();
      let lang = null;
      if (k === 'wikipedia') {
        // A chosen entry keeps the edition it was found in.
        const picked = entry ? { code: shown.lang } : editionCode();
        if (picked.message) return { message: picked.message, control: otherEdition };
        lang = picked.code;
      }
      const title = entry ? String(entry.title).trim() : typed;
      const characterName = typed || title;
      if (!title) return { message: t('create.error.nameEmpty'), control: name };
      if (charCount(characterName) > lim.name_chars) return { message: t('create.error.nameLong', { max: lim.name_chars }), control: name };
      if (charCount(title) > MAX_TITLE_CHARS) return { message: t('create.error.titleLong', { max: MAX_TITLE_CHARS }), control: name };
      const source = k === 'wikipedia' ? { kind: k, lang, title } : { kind: k, title };
      if (k === 'baike' && entry?.id) source.id = String(entry.id);
      return { body: { name: characterName, source } };
    }
    if (!typed) return { message: t('create.error.nameEmpty'), control: name };
    if (k === 'url') {
      const address = url.value.trim();
      if (!address) return { message: t('create.error.urlEmpty'), control: url };
      if (charCount(address) > MAX_URL_CHARS) return { message: t('create.error.urlLong', { max: MAX_URL_CHARS }), control: url };
      if (!httpUrl(address)) return { message: t('create.error.url'), control: url };
      return { body: { name: typed, source: { kind: 'url', url: address } } };
    }
    const n = charCount(text.value.trim());
    if (n === 0) return { message: t('create.error.sourceEmpty'), control: text };
    if (n < MIN_SOURCE_CHARS) return { message: t('create.error.sourceShort', { min: MIN_SOURCE_CHARS, n }), control: text };
    if (charCount(text.value) > lim.source_chars) return { message: t('create.error.sourceLong', { max: lim.source_chars.toLocaleString() }), control: text };
    return { body: { name: typed, source: { kind: 'text', text: text.value } } };
  }

  function fail(message, control) {
    error.set(message);
    control.focus();
  }
}
