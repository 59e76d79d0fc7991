// The friendly not-found page: unknown paths and resources the API answers 404 for.

import { h } from '../dom.js';
import { t } from '../i18n.js';
import { session } from '../state.js';

export async function render(root, ctx) {
  document.body.dataset.page = 'not-found';
  ctx.setTitle(t('notFound.title'));
  root.append(
    h(
      'section',
      { class: 'card not-found', id: 'not-found', dataset: { test: 'not-found' } },
      h('h1', null, t('notFound.title')),
      h('p', null, t('notFound.body')),
      h('p', null, h('a', { href: session.user ? '/' : '/login', class: 'btn btn-primary', id: 'not-found-home' }, session.user ? t('notFound.home') : t('notFound.login'))),
    ),
  );
}
