// Chat with a character: history paged back as you scroll up, replies streamed token by token,
// several messages in flight kept in order, cancel and retry, and the memory panel.

import { api, ApiProblem, streamJob, query } from '../api.js';
import { h, append, clear, charCount, formatTime, formatDateTime, randomId, stored } from '../dom.js';
import { t } from '../i18n.js';
import { limits } from '../state.js';
import { errorArea, statusBadge, revealConversation, bubbleView, stickyScroll, historyPager } from '../components.js';
import { memoryPanel } from '../memory.js';

const PAGE_SIZE = 30;

export async function render(root, ctx) {
  const characterId = ctx.params.id;
  const lim = limits();
  const { character } = await api.get(`/v1/characters/${encodeURIComponent(characterId)}`, { signal: ctx.signal });
  ctx.setTitle(t('chat.title', { name: character.name }));

  // Replies still on their way, by the user message they answer: survives a reload of the tab.
  const pendingKey = `fastnpc.chat.${characterId}`;
  const pending = stored.get(sessionStorage, pendingKey, {});
  const savePending = () => stored.set(sessionStorage, pendingKey, pending);

  // ---- layout
  const log = h('div', { id: 'chat-log', class: 'chat-log', tabindex: '0', 'aria-label': t('chat.log', { name: character.name }) });
  const list = h('ol', { id: 'chat-messages', class: 'messages', role: 'log', dataset: { test: 'chat-messages' } });

  const input = h('textarea', { id: 'chat-input', name: 'message', rows: 2, maxlength: lim.message_chars, dataset: { test: 'chat-input' }, placeholder: t('chat.placeholder') });
  const send = h('button', { type: 'submit', id: 'chat-send', class: 'btn btn-primary', dataset: { test: 'chat-send' } }, t('chat.send'));
  const formError = errorArea('chat-error');
  const ready = character.status === 'ready';
  const form = h(
    'form',
    { id: 'chat-form', class: 'chat-form', dataset: { test: 'chat-form' } },
    h('label', { for: 'chat-input', class: 'chat-label' }, t('chat.inputLabel', { name: character.name }), ' ', h('span', { class: 'muted' }, t('chat.enterHint'))),
    h('div', { class: 'chat-compose' }, input, send),
    formError.el,
  );
  if (!ready) {
    input.disabled = true;
    send.disabled = true;
  }

  const memory = memoryPanel(characterId, ctx);
  append(root, [
    h(
      'div',
      { class: 'page-head' },
      h('div', null, h('h1', null, character.name, ' ', ready ? null : statusBadge(character.status)), character.brief ? h('p', { class: 'muted clamp-2' }, character.brief) : null),
      h('div', { class: 'page-actions' }, h('a', { href: `/characters/${encodeURIComponent(characterId)}`, class: 'btn btn-ghost', id: 'profile-link', dataset: { test: 'profile-link' } }, t('chat.profile'))),
    ),
    ready ? null : h('p', { class: 'notice', dataset: { test: 'chat-not-ready' } }, t('chat.notReady')),
    h('div', { class: 'chat-layout' }, h('section', { class: 'chat-main card', 'aria-label': t('chat.conversation') }, log, form), h('aside', { class: 'chat-aside' }, memory.el)),
  ]);

  // ---- scrolling
  const { scrollToBottom, stick } = stickyScroll(log);

  // ---- message views
  const views = new Map(); // message id → view
  const lastOfThread = new Map(); // user message id → last element of its thread (message, replies)

  function messageView({ role, text = '', state = 'done', id = null, createdAt = null, truncated = false }) {
    const body = h('div', { class: 'bubble-text' }, text);
    const note = h('p', { class: 'bubble-note', hidden: true });
    const actions = h('div', { class: 'bubble-actions' });
    const time = h('time', { class: 'bubble-time', datetime: createdAt || '', title: createdAt ? formatDateTime(createdAt) : '' }, createdAt ? formatTime(createdAt) : '');
    const who = h('span', { class: 'bubble-who' }, role === 'user' ? t('chat.you') : character.name);
    const li = h(
      'li',
      { class: ['message', `message-${role}`], dataset: { test: 'chat-message', role, state, id } },
      h('div', { class: 'bubble' }, h('div', { class: 'bubble-head' }, who, ' ', time), body, note, actions),
    );
    const view = bubbleView({ li, body, time, note, text, views, stick });
    view.setActions = (...buttons) => clear(actions, buttons);
    view.setState(state);
    li.classList.toggle('empty', !text);
    if (truncated) view.setNote(t('chat.truncated'), 'muted');
    if (id) views.set(id, view);
    return view;
  }

  function viewFor(message) {
    const role = message.author === 'user' ? 'user' : 'assistant';
    return messageView({ role, text: message.content, id: message.id, createdAt: message.created_at, truncated: message.truncated });
  }

  // ---- following a reply job
  const following = new Map(); // job id → AbortController

  function followReply(view, jobId, userMessageId) {
    const controller = new AbortController();
    ctx.signal.addEventListener('abort', () => controller.abort(), { once: true });
    following.set(jobId, controller);
    view.setState('streaming');
    view.setNote('');
    view.setText('');
    view.li.dataset.job = jobId;
    const cancel = h('button', { type: 'button', class: 'btn btn-small btn-ghost', dataset: { test: 'cancel-reply' } }, t('chat.cancel'));
    cancel.addEventListener('click', async () => {
      cancel.disabled = true;
      try {
        await api.post(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`);
      } catch (problem) {
        if (problem?.name !== 'AbortError') view.setNote(problem.message, 'error');
        cancel.disabled = false;
      }
    });
    view.setActions(cancel);
    const connection = (s) => view.li.classList.toggle('reconnecting', s === 'reconnecting');

    streamJob(jobId, {
      signal: controller.signal,
      onStatus: connection,
      onEvent(event) {
        const data = event.data || {};
        if (event.type === 'token' && typeof data.text === 'string') view.append(data.text);
        else if (event.type === 'reset') view.setText('');
      },
    })
      .then((terminal) => {
        following.delete(jobId);
        if (!terminal || !ctx.active) return;
        const data = terminal.data || {};
        if (terminal.type === 'succeeded') {
          const message = data.result?.message;
          if (message && typeof message.content === 'string') view.setText(message.content);
          view.setId(message?.id);
          view.setTime(message?.created_at);
          view.setState('done');
          view.setActions();
          if (message?.truncated) view.setNote(t('chat.truncated'), 'muted');
          delete pending[userMessageId];
          savePending();
          memory.afterReply();
        } else {
          failed(view, jobId, userMessageId, terminal.type === 'cancelled' ? t('chat.cancelled') : data.message || t('chat.failed'));
        }
      })
      .catch((problem) => {
        following.delete(jobId);
        if (problem?.name === 'AbortError' || !ctx.active) return;
        failed(view, jobId, userMessageId, problem.message);
      });
  }

  function failed(view, jobId, userMessageId, message) {
    view.setState('failed');
    view.setNote(message, 'error');
    const retry = h('button', { type: 'button', class: 'btn btn-small', dataset: { test: 'retry-reply' } }, t('common.retry'));
    retry.addEventListener('click', async () => {
      retry.disabled = true;
      try {
        const answer = await api.post(`/v1/jobs/${encodeURIComponent(jobId)}/retry`);
        pending[userMessageId] = answer.job.id;
        savePending();
        followReply(view, answer.job.id, userMessageId);
      } catch (problem) {
        if (problem?.name === 'AbortError') return;
        view.setNote(problem.message, 'error');
        retry.disabled = false;
      }
    });
    view.setActions(retry);
  }

  // ---- history
  /** Puts a page of history (oldest first) at the top. Replies go right after the message they
   *  answer when it is shown. */
  function prependBatch(messages) {
    const fragment = document.createDocumentFragment();
    const inFragment = [];
    for (const message of messages) {
      if (views.has(message.id)) continue;
      const view = viewFor(message);
      const anchor = message.reply_to ? lastOfThread.get(message.reply_to) : null;
      if (anchor && anchor.isConnected) {
        anchor.after(view.li);
        lastOfThread.set(message.reply_to, view.li);
      } else if (anchor && inFragment.includes(anchor)) {
        anchor.after(view.li);
        lastOfThread.set(message.reply_to, view.li);
        inFragment.push(view.li);
      } else {
        fragment.append(view.li);
        inFragment.push(view.li);
      }
      if (message.author === 'user') lastOfThread.set(message.id, view.li);
    }
    list.prepend(fragment);
  }

  const history = historyPager({
    log,
    list,
    fetchPage: (before) =>
      api.get(`/v1/characters/${encodeURIComponent(characterId)}/messages${query({ limit: PAGE_SIZE, before })}`, { signal: ctx.signal }),
    insert: prependBatch,
    onFirstPage: resumePending,
    onError: (problem) => formError.set(problem.message),
    isActive: () => ctx.active,
  });

  /** Replies that were on their way when the page was left or reloaded. */
  async function resumePending(items) {
    const answered = new Set(items.filter((m) => m.reply_to).map((m) => m.reply_to));
    for (const [userMessageId, jobId] of Object.entries(pending)) {
      const userView = views.get(userMessageId);
      if (!userView || answered.has(userMessageId)) {
        delete pending[userMessageId];
        continue;
      }
      let job;
      try {
        job = (await api.get(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal: ctx.signal })).job;
      } catch (problem) {
        if (problem?.name === 'AbortError') throw problem;
        delete pending[userMessageId];
        continue;
      }
      const view = messageView({ role: 'assistant', state: 'streaming' });
      (lastOfThread.get(userMessageId) || userView.li).after(view.li);
      lastOfThread.set(userMessageId, view.li);
      if (job.status === 'queued' || job.status === 'running') followReply(view, jobId, userMessageId);
      else if (job.status === 'succeeded') {
        const message = job.result?.message;
        view.setText(message?.content || '');
        view.setId(message?.id);
        view.setTime(message?.created_at);
        view.setState('done');
        delete pending[userMessageId];
      } else failed(view, jobId, userMessageId, job.status === 'cancelled' ? t('chat.cancelled') : job.error?.message || t('chat.failed'));
    }
    savePending();
    scrollToBottom();
  }

  // ---- sending
  let sendChain = Promise.resolve();

  function sendMessage(text) {
    const userView = messageView({ role: 'user', text, state: 'sending' });
    const replyView = messageView({ role: 'assistant', state: 'streaming' });
    stick(() => list.append(userView.li, replyView.li));
    scrollToBottom();
    const key = randomId();
    const attempt = () => {
      sendChain = sendChain.then(async () => {
        try {
          const answer = await api.post(`/v1/characters/${encodeURIComponent(characterId)}/messages`, { content: text }, { headers: { 'Idempotency-Key': key } });
          const message = answer.message;
          userView.setId(message.id);
          userView.setTime(message.created_at);
          userView.setText(message.content);
          userView.setState('done');
          userView.setNote('');
          userView.setActions();
          lastOfThread.set(message.id, replyView.li);
          if (!replyView.li.isConnected) userView.li.after(replyView.li);
          pending[message.id] = answer.job.id;
          savePending();
          followReply(replyView, answer.job.id, message.id);
        } catch (problem) {
          if (problem?.name === 'AbortError' || !ctx.active) return;
          userView.setState('failed');
          userView.setNote(problem.message, 'error');
          replyView.li.remove();
          const again = h('button', { type: 'button', class: 'btn btn-small', dataset: { test: 'resend-message' } }, t('chat.resend'));
          again.addEventListener('click', () => {
            userView.setState('sending');
            userView.setNote('');
            userView.setActions();
            // Sent now, so after everything sent meanwhile: where the server stores it.
            list.append(userView.li, replyView.li);
            replyView.setState('streaming');
            attempt();
          });
          userView.setActions(again);
        }
      });
    };
    attempt();
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    formError.clear();
    const text = input.value.trim();
    if (!text) return;
    if (charCount(text) > lim.message_chars) {
      formError.set(t('chat.error.long', { max: lim.message_chars.toLocaleString() }));
      return;
    }
    input.value = '';
    sendMessage(text);
    input.focus();
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  await Promise.all([history.loadOlder(), memory.load()]);
  revealConversation(root);
  if (ready) input.focus({ preventScroll: true });
}
