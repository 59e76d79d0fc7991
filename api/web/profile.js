// The persona profile's categories and fields (shared/src/domain/profile.rs, with the English
// labels of shared/src/prompts/en.rs), and how a profile is shown.

import { h } from './dom.js';
import { getLang } from './i18n.js';

/** [key, English label, Chinese label, fields: [key, en, zh, isList]] in the original's order. */
export const CATEGORIES = [
  ['basic_identity', 'Basic identity', '基础身份信息', [
    ['name', 'Name', '姓名'], ['age', 'Age', '年龄'], ['gender', 'Gender', '性别'],
    ['occupation', 'Occupation', '职业'], ['identity_background', 'Identity and background', '身份背景'],
    ['appearance', 'Appearance', '外貌特征'], ['titles', 'Titles and forms of address', '称谓/头衔'],
  ]],
  ['personality', 'Personality and behaviour', '个性与行为设定', [
    ['traits', 'Personality traits', '性格特质'], ['values', 'Values', '价值观'],
    ['emotion_style', 'Emotional style', '情绪风格'], ['speaking_style', 'Way of speaking', '说话方式'],
    ['preferences', 'Likes', '偏好'], ['dislikes', 'Dislikes', '厌恶'],
    ['motivation_goals', 'Motivation and goals', '动机与目标'],
  ]],
  ['background', 'Background', '背景故事', [
    ['origin', 'Origins', '出身'], ['experiences', 'Experiences', '经历', true],
    ['current_situation', 'Current situation', '当前处境'], ['relationships', 'Relationships', '关系网络', true],
    ['secrets', 'Secrets', '秘密'],
  ]],
  ['knowledge', 'Knowledge and abilities', '知识与能力', [
    ['knowledge_domain', 'Areas of knowledge', '知识领域'], ['skills', 'Skills', '技能'],
    ['limitations', 'Limitations', '限制'],
  ]],
  ['dialogue_rules', 'Dialogue and interaction rules', '对话与交互规范', [
    ['tone', 'Tone', '语气'], ['language_style', 'Language style', '语言风格'],
    ['behavior_constraints', 'Behavioural constraints', '行为约束'],
    ['interaction_pattern', 'Interaction pattern', '互动模式'],
  ]],
  ['tasks', 'Tasks and functions', '任务/功能性信息', [
    ['task_goal', 'Task goal', '任务目标'], ['dialogue_intent', 'Dialogue intent', '对话意图'],
    ['interaction_limits', 'Interaction limits', '交互限制'], ['trigger_conditions', 'Triggers', '触发条件'],
  ]],
  ['worldview', 'Setting and worldview', '环境与世界观', [
    ['worldview', 'Worldview', '世界观'], ['timeline', 'Timeline', '时间线'],
    ['social_rules', 'Social rules', '社会规则'], ['external_resources', 'External resources', '外部资源'],
  ]],
  ['system_params', 'System and control parameters', '系统与控制参数', [
    ['consistency_control', 'Consistency control', '一致性控制'],
    ['preference_control', 'Preference control', '偏好控制'], ['safety_limits', 'Safety limits', '安全限制'],
    ['deduction_range', 'Creative latitude', '演绎范围'],
  ]],
  ['source', 'Source metadata', '来源', [
    ['unique_id', 'Unique ID', '唯一标识'], ['source_url', 'Source URL', '链接'],
    ['source_size', 'Source size', '来源信息量'],
  ]],
];

export const SOURCE_CATEGORY = 'source';

/** The generation steps, in display order: the progress events' `step` names. */
export const GENERATION_STEPS = CATEGORIES.map(([key]) => key);

function pick(en, zh) {
  return getLang() === 'zh' ? zh : en;
}

/** A category's label in the UI language; unknown keys are shown as they are. */
export function categoryLabel(key) {
  const category = CATEGORIES.find(([k]) => k === key);
  return category ? pick(category[1], category[2]) : key;
}

function fieldSpec(categoryKey, fieldKey) {
  const category = CATEGORIES.find(([k]) => k === categoryKey);
  return category?.[3].find(([k]) => k === fieldKey);
}

function humanize(key) {
  return key.replace(/_/g, ' ').replace(/^./, (c) => c.toUpperCase());
}

/** Is a value worth showing (not empty text, not an empty list)? */
function present(value) {
  if (value === null || value === undefined) return false;
  if (typeof value === 'string') return value.trim() !== '';
  if (Array.isArray(value)) return value.some(present);
  if (typeof value === 'object') return Object.keys(value).length > 0;
  return true;
}

function renderValue(value) {
  if (Array.isArray(value)) {
    return h('ul', { class: 'field-list' }, value.filter(present).map((item) => h('li', null, renderInline(item))));
  }
  if (value && typeof value === 'object') {
    return h(
      'dl',
      { class: 'nested' },
      Object.entries(value).filter(([, v]) => present(v)).map(([k, v]) => [h('dt', null, humanize(k)), h('dd', null, renderValue(v))]),
    );
  }
  return h('p', { class: 'field-text' }, renderInline(value));
}

function renderInline(value) {
  if (value && typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** A link (new tab) only for http(s) addresses, showing `label` (default: the URL); anything
 * else is text. */
export function safeLink(url, label = url) {
  try {
    const parsed = new URL(url);
    if (parsed.protocol === 'http:' || parsed.protocol === 'https:') {
      return h('a', { href: parsed.href, rel: 'noopener noreferrer nofollow', target: '_blank' }, String(label));
    }
  } catch {
    /* not a URL */
  }
  return document.createTextNode(String(label));
}

/** One category as a section: heading and a definition list of its non-empty fields. */
export function renderCategory(key, data) {
  const spec = CATEGORIES.find(([k]) => k === key);
  const order = spec ? spec[3].map(([k]) => k) : [];
  const entries = data && typeof data === 'object' && !Array.isArray(data) ? Object.entries(data) : [['', data]];
  entries.sort(([a], [b]) => (order.indexOf(a) + 1 || 999) - (order.indexOf(b) + 1 || 999));
  const items = [];
  for (const [fieldKey, value] of entries) {
    if (!present(value)) continue;
    const f = fieldSpec(key, fieldKey);
    const label = f ? pick(f[1], f[2]) : humanize(fieldKey);
    const shown = fieldKey === 'source_url' && typeof value === 'string' ? h('p', { class: 'field-text' }, safeLink(value)) : renderValue(value);
    items.push(h('div', { class: 'profile-field', dataset: { field: fieldKey } }, h('dt', null, label), h('dd', null, shown)));
  }
  return h(
    'section',
    { class: 'profile-category card', dataset: { test: 'profile-category', category: key } },
    h('h2', null, categoryLabel(key)),
    items.length ? h('dl', { class: 'profile-fields' }, items) : h('p', { class: 'muted' }, '—'),
  );
}

/** The persona categories in order (known first, then any others), without the source one. */
export function personaCategories(profile) {
  if (!profile || typeof profile !== 'object') return [];
  const known = GENERATION_STEPS.filter((key) => key !== SOURCE_CATEGORY && key in profile);
  const others = Object.keys(profile).filter((key) => key !== SOURCE_CATEGORY && !GENERATION_STEPS.includes(key));
  return [...known, ...others];
}
