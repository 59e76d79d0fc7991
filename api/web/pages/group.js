// A group chat: the transcript (paged back as you scroll up), the live turn loop (the
// moderator's pick, that character's reply streaming, "waiting for you"), members.

import { api, ApiProblem, streamJob, query } from '../api.js';
import { h, clear, charCount, formatTime, formatDateTime, randomId, stored } from '../dom.js';
import { t } from '../i18n.js';
import { limits } from '../state.js';
import { confirmDialog, errorArea, field, busy, statusBadge, statusArea, revealConversation, bubbleView, stickyScroll, historyPager } from '../components.js';
import { allCharacters, MAX_MEMBERS } from './groups.js';

const PAGE_SIZE = 30;

export async function render(root, ctx) {
  const groupId = ctx.params.id;
  const lim = limits();
  const groupUrl = `/v1/groups/${encodeURIComponent(groupId)}`;
  let { group } = await api.get(groupUrl, { signal: ctx.signal });
  ctx.setTitle(group.name);
  const turnKey = `fastnpc.group.${groupId}`;

  // ---- layout
  const title = h('h1', { id: 'group-title' }, group.name);
  const log = h('div', { id: 'group-log', class: 'chat-log', tabindex: '0', 'aria-label': t('group.log', { name: group.name }) });
  const list = h('ol', { id: 'group-messages', class: 'messages', role: 'log', dataset: { test: 'group-messages' } });

  const turnStatus = h('p', { id: 'turn-status', class: 'turn-status muted', 'aria-live': 'polite', dataset: { test: 'turn-status' } });
  const waiting = h('p', { id: 'waiting-indicator', class: 'waiting', hidden: true, role: 'status', dataset: { test: 'waiting-indicator' } });
  const turnError = errorArea('turn-error');
  const turnActions = h('div', { class: 'turn-actions', id: 'turn-actions' });

  const input = h('textarea', { id: 'group-input', name: 'message', rows: 2, maxlength: lim.message_chars, dataset: { test: 'group-input' }, placeholder: t('group.placeholder') });
  const send = h('button', { type: 'submit', id: 'group-send', class: 'btn btn-primary', dataset: { test: 'group-send' } }, t('chat.send'));
  const formError = errorArea('group-error');
  const form = h(
    'form',
    { id: 'group-form', class: 'chat-form', dataset: { test: 'group-form' } },
    h('label', { for: 'group-input', class: 'chat-label' }, t('group.inputLabel'), ' ', h('span', { class: 'muted' }, t('chat.enterHint'))),
    h('div', { class: 'chat-compose' }, input, send),
    formError.el,
  );

  const membersPanel = h('details', { id: 'members-panel', class: 'card members-panel', open: window.matchMedia('(min-width: 960px)').matches, dataset: { test: 'members-panel' } });
  root.append(
    h('div', { class: 'page-head' }, h('div', null, title, h('p', { class: 'muted', id: 'group-subtitle' })), h('div', { class: 'page-actions' }, h('a', { href: '/groups', class: 'btn btn-ghost' }, t('group.back')))),
    h(
      'div',
      { class: 'chat-layout' },
      h('section', { class: 'chat-main card', 'aria-label': t('chat.conversation') }, log, h('div', { class: 'turn-bar' }, turnStatus, waiting, turnError.el, turnActions), form),
      h('aside', { class: 'chat-aside' }, membersPanel),
    ),
  );

  // ---- members panel
  const characters = await allCharacters(ctx.signal);
  const membersError = errorArea('members-error');
  const membersStatus = statusArea('members-status');

  function renderMembers() {
    title.textContent = group.name;
    ctx.setTitle(group.name);
    document.getElementById('group-subtitle').textContent = t('group.subtitle', { names: group.members.map((m) => m.name).join(t('common.listSeparator')) || '—' });
    const memberIds = new Set(group.members.map((m) => m.character_id));
    const memberList = h(
      'ul',
      { id: 'group-members', class: 'member-list', dataset: { test: 'group-members' } },
      group.members.map((member) => {
        const remove = h('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', dataset: { test: 'remove-member', id: member.character_id }, 'aria-label': t('group.remove.aria', { name: member.name }) }, t('group.remove'));
        remove.addEventListener('click', () =>
          busy(remove, async () => {
            membersError.clear();
            try {
              await api.delete(`${groupUrl}/members/${encodeURIComponent(member.character_id)}`);
              group = (await api.get(groupUrl, { signal: ctx.signal })).group;
              renderMembers();
              membersStatus.set(t('group.removed', { name: member.name }));
            } catch (problem) {
              if (problem?.name !== 'AbortError') membersError.set(problem.message);
            }
          }),
        );
        return h(
          'li',
          { class: 'member', dataset: { test: 'group-member', id: member.character_id } },
          h('span', { class: 'member-name' }, h('a', { href: `/characters/${encodeURIComponent(member.character_id)}` }, member.name), ' ', member.status === 'ready' ? null : statusBadge(member.status)),
          group.members.length > 1 ? remove : null,
        );
      }),
    );
    const candidates = characters.filter((c) => !memberIds.has(c.id));
    const select = h('select', { id: 'add-member-select', dataset: { test: 'add-member-select' } }, candidates.map((c) => h('option', { value: c.id }, c.name)));
    const add = h('button', { type: 'button', id: 'add-member', class: 'btn btn-small', dataset: { test: 'add-member' } }, t('group.add'));
    add.disabled = !candidates.length || group.members.length >= MAX_MEMBERS;
    add.addEventListener('click', () =>
      busy(add, async () => {
        membersError.clear();
        try {
          group = (await api.post(`${groupUrl}/members`, { character_id: select.value })).group;
          renderMembers();
          membersStatus.set(t('group.added'));
          document.getElementById('add-member-select')?.focus();
        } catch (problem) {
          if (problem?.name !== 'AbortError') membersError.set(problem.message);
        }
      }),
    );
    const rename = h('input', { id: 'group-rename', type: 'text', value: group.name, maxlength: lim.name_chars, dataset: { test: 'group-rename' } });
    const renameSave = h('button', { type: 'submit', id: 'group-rename-save', class: 'btn btn-small', dataset: { test: 'group-rename-save' } }, t('common.save'));
    const renameForm = h('form', { class: 'inline-form', id: 'group-rename-form' }, field(t('group.rename'), rename), renameSave);
    renameForm.addEventListener('submit', (event) => {
      event.preventDefault();
      const name = rename.value.trim();
      if (!name || charCount(name) > lim.name_chars) return membersError.set(t('groups.error.name'));
      busy(renameSave, async () => {
        try {
          group = (await api.patch(groupUrl, { name })).group;
          renderMembers();
          membersStatus.set(t('common.saved'));
        } catch (problem) {
          if (problem?.name !== 'AbortError') membersError.set(problem.message);
        }
      });
    });
    const del = h('button', { type: 'button', id: 'delete-group', class: 'btn btn-small btn-danger-ghost', dataset: { test: 'delete-group' } }, t('groups.deleteGroup'));
    del.addEventListener('click', async () => {
      const confirmed = await confirmDialog({ title: t('groups.delete.title', { name: group.name }), message: t('groups.delete.body'), confirmLabel: t('common.delete'), danger: true });
      if (!confirmed || !ctx.active) return;
      try {
        await api.delete(groupUrl);
      } catch (problem) {
        if (!(problem instanceof ApiProblem && problem.status === 404)) return membersError.set(problem.message);
      }
      stored.remove(sessionStorage, turnKey);
      ctx.navigate('/groups', { replace: true });
    });
    clear(
      membersPanel,
      h('summary', null, t('group.membersTitle', { n: group.members.length })),
      h(
        'div',
        { class: 'members-inner' },
        memberList,
        candidates.length
          ? h('div', { class: 'inline-form' }, field(t('group.addLabel'), select), add)
          : h('p', { class: 'muted' }, t('group.noCandidates')),
        renameForm,
        membersError.el,
        membersStatus.el,
        h('div', { class: 'danger-zone' }, del),
      ),
    );
  }
  renderMembers();

  // ---- scrolling
  const { scrollToBottom, stick } = stickyScroll(log);

  // ---- message views
  const views = new Map(); // message id → view

  function memberName(characterId) {
    return group.members.find((m) => m.character_id === characterId)?.name || characters.find((c) => c.id === characterId)?.name || '…';
  }

  function moderatorNote(moderator) {
    if (!moderator || typeof moderator !== 'object') return null;
    const parts = [];
    if (moderator.reason) parts.push(moderator.reason);
    if (typeof moderator.confidence === 'number') parts.push(t('group.confidence', { n: Math.round(moderator.confidence * 100) }));
    if (moderator.decision === 'random') parts.push(t('group.random'));
    return parts.length ? h('p', { class: 'moderator-note muted', dataset: { test: 'speaker-note' } }, t('group.moderatorSays'), ' ', parts.join(' · ')) : null;
  }

  function messageView({ author, speakerId = null, name, text = '', state = 'done', id = null, createdAt = null, moderator = null, truncated = false }) {
    const role = author === 'user' ? 'user' : 'assistant';
    const body = h('div', { class: 'bubble-text' }, text);
    const note = h('p', { class: 'bubble-note', hidden: true });
    const time = h('time', { class: 'bubble-time', datetime: createdAt || '', title: createdAt ? formatDateTime(createdAt) : '' }, createdAt ? formatTime(createdAt) : '');
    const li = h(
      'li',
      { class: ['message', `message-${role}`], dataset: { test: 'group-message', author: author === 'user' ? 'user' : 'character', role, state, id, speaker: speakerId } },
      h('div', { class: 'bubble' }, h('div', { class: 'bubble-head' }, h('span', { class: 'bubble-who' }, author === 'user' ? t('chat.you') : name), ' ', time), body, note, moderatorNote(moderator)),
    );
    const view = bubbleView({ li, body, time, note, text, views, stick });
    view.setState(state);
    li.classList.toggle('empty', !text);
    if (truncated) view.setNote(t('chat.truncated'), 'muted');
    if (id) views.set(id, view);
    return view;
  }

  const viewFor = (m) =>
    messageView({ author: m.author, speakerId: m.character_id, name: m.speaker_name, text: m.content, id: m.id, createdAt: m.created_at, moderator: m.author === 'user' ? null : m.moderator, truncated: m.truncated });

  // ---- the turn loop, live
  const followed = new Set();

  function followTurn(jobId) {
    if (followed.has(jobId)) return;
    followed.add(jobId);
    stored.set(sessionStorage, turnKey, { jobId });
    let round = null; // {announcement, view, speakerId}
    turnError.clear();
    clear(turnActions);
    turnStatus.textContent = t('group.status.queued');

    const newRound = (speakerId, name) => {
      const view = messageView({ author: 'character', speakerId, name, state: 'streaming' });
      round = { announcement: null, view, speakerId };
      return round;
    };

    streamJob(jobId, {
      signal: ctx.signal,
      onStatus: (s) => {
        if (s === 'reconnecting') turnStatus.textContent = t('stream.reconnecting');
      },
      onEvent(event) {
        const data = event.data || {};
        switch (event.type) {
          case 'status':
            if (data.status === 'running') turnStatus.textContent = t('group.status.moderating');
            break;
          case 'speaker': {
            waiting.hidden = true;
            const r = newRound(data.character_id, data.name);
            const confidence = typeof data.confidence === 'number' ? t('group.confidence', { n: Math.round(data.confidence * 100) }) : '';
            r.announcement = h(
              'li',
              { class: 'speaker-announcement', dataset: { test: 'speaker-announcement', speaker: data.character_id, decision: data.decision || '' } },
              h('strong', null, t('group.speaks', { name: data.name })),
              data.reason ? h('span', null, ' — ', data.reason) : null,
              confidence ? h('span', { class: 'muted' }, ` (${confidence}${data.decision === 'random' ? ` · ${t('group.random')}` : ''})`) : null,
            );
            stick(() => list.append(r.announcement, r.view.li));
            turnStatus.textContent = t('group.status.replying', { name: data.name });
            break;
          }
          case 'token': {
            if (!round || (data.speaker && round.speakerId && data.speaker !== round.speakerId)) {
              const r = newRound(data.speaker || null, memberName(data.speaker));
              stick(() => list.append(r.view.li));
            }
            if (typeof data.text === 'string') round.view.append(data.text);
            break;
          }
          case 'reset':
            if (round) round.view.setText('');
            break;
          case 'message': {
            const message = data.message || {};
            if (message.id && views.has(message.id)) {
              // Already in the transcript (a resumed stream replays from the start).
              if (round) {
                round.announcement?.remove();
                if (round.view.li !== views.get(message.id).li) round.view.li.remove();
              }
            } else {
              if (!round) {
                const r = newRound(message.character_id, message.speaker_name || memberName(message.character_id));
                stick(() => list.append(r.view.li));
              }
              round.view.setText(message.content ?? round.view.text);
              round.view.setId(message.id);
              round.view.setTime(message.created_at || new Date().toISOString());
              round.view.setState('done');
              if (message.truncated) round.view.setNote(t('chat.truncated'), 'muted');
            }
            round = null;
            turnStatus.textContent = t('group.status.moderating');
            break;
          }
          case 'waiting': {
            const reason = String(data.reason || '');
            let text;
            if (reason === 'max_rounds') text = t('group.waiting.maxRounds');
            else if (reason.startsWith('moderator:')) text = t('group.waiting.moderator', { reason: reason.slice('moderator:'.length).trim() });
            else text = t('group.waiting.other', { reason });
            clear(waiting, h('strong', null, t('group.waiting')), ' ', text);
            waiting.dataset.reason = reason;
            waiting.hidden = false;
            turnStatus.textContent = '';
            break;
          }
          default:
            break;
        }
      },
    })
      .then((terminal) => {
        followed.delete(jobId);
        if (!terminal || !ctx.active) return;
        if (round && round.view.li.dataset.state === 'streaming') {
          round.view.setState('failed');
          round.view.setNote(terminal.type === 'cancelled' ? t('group.interrupted') : t('chat.failed'), 'error');
        }
        if (stored.get(sessionStorage, turnKey)?.jobId === jobId) stored.remove(sessionStorage, turnKey);
        if (followed.size === 0) turnStatus.textContent = '';
        if (terminal.type === 'failed') showTurnFailure(jobId, terminal.data?.message || t('chat.failed'));
      })
      .catch((problem) => {
        followed.delete(jobId);
        if (problem?.name === 'AbortError' || !ctx.active) return;
        showTurnFailure(jobId, problem.message);
      });
  }

  function showTurnFailure(jobId, message) {
    turnStatus.textContent = '';
    turnError.set(message);
    const retry = h('button', { type: 'button', id: 'retry-turn', class: 'btn btn-small', dataset: { test: 'retry-turn' } }, t('common.retry'));
    retry.addEventListener('click', () =>
      busy(retry, async () => {
        try {
          const answer = await api.post(`/v1/jobs/${encodeURIComponent(jobId)}/retry`);
          turnError.clear();
          clear(turnActions);
          followTurn(answer.job.id);
        } catch (problem) {
          if (problem?.name !== 'AbortError') turnError.set(problem.message);
        }
      }),
    );
    clear(turnActions, retry);
  }

  // ---- history
  const history = historyPager({
    log,
    list,
    fetchPage: (before) => api.get(`${groupUrl}/messages${query({ limit: PAGE_SIZE, before })}`, { signal: ctx.signal }),
    insert: (items) => list.prepend(...items.filter((m) => !views.has(m.id)).map((m) => viewFor(m).li)),
    onError: (problem) => formError.set(problem.message),
    isActive: () => ctx.active,
  });

  // ---- sending (allowed while a loop runs: the server interrupts it and a new loop follows)
  let sendChain = Promise.resolve();
  function sendMessage(text) {
    const view = messageView({ author: 'user', text, state: 'sending' });
    stick(() => list.append(view.li));
    scrollToBottom();
    waiting.hidden = true;
    const key = randomId();
    const attempt = () => {
      sendChain = sendChain.then(async () => {
        try {
          const answer = await api.post(`${groupUrl}/messages`, { content: text }, { headers: { 'Idempotency-Key': key } });
          view.setId(answer.message?.id);
          view.setTime(answer.message?.created_at || new Date().toISOString());
          view.setState('done');
          view.setNote('');
          followTurn(answer.job.id);
        } catch (problem) {
          if (problem?.name === 'AbortError' || !ctx.active) return;
          view.setState('failed');
          view.setNote(problem.message, 'error');
          const again = h('button', { type: 'button', class: 'btn btn-small', dataset: { test: 'resend-message' } }, t('chat.resend'));
          again.addEventListener('click', () => {
            again.remove();
            view.setState('sending');
            view.setNote('');
            attempt();
          });
          view.li.querySelector('.bubble').append(again);
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
    if (charCount(text) > lim.message_chars) return formError.set(t('chat.error.long', { max: lim.message_chars.toLocaleString() }));
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

  await history.loadOlder();

  // A loop that was running when this tab was reloaded: follow it again.
  const remembered = stored.get(sessionStorage, turnKey);
  if (remembered?.jobId) {
    try {
      const { job } = await api.get(`/v1/jobs/${encodeURIComponent(remembered.jobId)}`, { signal: ctx.signal });
      if (job.status === 'queued' || job.status === 'running') followTurn(job.id);
      else stored.remove(sessionStorage, turnKey);
    } catch (problem) {
      if (problem?.name === 'AbortError') throw problem;
      stored.remove(sessionStorage, turnKey);
    }
  }
  revealConversation(root);
  input.focus({ preventScroll: true });
}
