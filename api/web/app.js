// Boot, router, app shell (header, language switch, simulator banner, user menu), auth gate.
//
// Pages live in ./pages/*.js and export `render(root, ctx)`; the router calls it with the page
// container and a context (params, query, signal, navigate, ...). When the person leaves the
// page the context's signal aborts (streams and fetches stop) and the page's cleanups run.

import { api, ApiProblem, onUnauthorized } from './api.js';
import { h, clear, safeNext } from './dom.js';
import { t, getLang, setLang, onLangChange, LANGS } from './i18n.js';
import { session } from './state.js';

const ROUTES = [
  { path: '/login', page: 'login', module: './pages/login.js', public: true },
  { path: '/register', page: 'register', module: './pages/login.js', public: true },
  { path: '/', page: 'characters', module: './pages/characters.js', nav: 'characters' },
  { path: '/characters', page: 'characters', module: './pages/characters.js', nav: 'characters' },
  { path: '/characters/new', page: 'create-character', module: './pages/create.js', nav: 'new' },
  { path: '/characters/:id', page: 'character', module: './pages/character.js', nav: 'characters' },
  { path: '/characters/:id/generating', page: 'generating', module: './pages/generating.js', nav: 'characters' },
  { path: '/characters/:id/chat', page: 'chat', module: './pages/chat.js', nav: 'characters' },
  { path: '/groups', page: 'groups', module: './pages/groups.js', nav: 'groups' },
  { path: '/groups/:id', page: 'group', module: './pages/group.js', nav: 'groups' },
  { path: '/settings', page: 'settings', module: './pages/settings.js', nav: 'settings' },
  { path: '/admin', page: 'admin', module: './pages/admin.js', nav: 'admin' },
];
const NOT_FOUND = { page: 'not-found', module: './pages/notfound.js', public: true };

const modules = new Map();
function loadModule(path) {
  if (!modules.has(path)) {
    const promise = import(path).catch((error) => {
      modules.delete(path);
      throw error;
    });
    modules.set(path, promise);
  }
  return modules.get(path);
}

function match(pathname) {
  const parts = pathname.replace(/\/+$/, '').split('/').filter(Boolean);
  for (const route of ROUTES) {
    const pattern = route.path.split('/').filter(Boolean);
    if (pattern.length !== parts.length) continue;
    const params = {};
    let ok = true;
    for (let i = 0; i < pattern.length; i++) {
      if (pattern[i].startsWith(':')) {
        try {
          params[pattern[i].slice(1)] = decodeURIComponent(parts[i]);
        } catch {
          ok = false;
          break;
        }
      } else if (pattern[i] !== parts[i]) {
        ok = false;
        break;
      }
    }
    if (ok) return { route, params };
  }
  return { route: NOT_FOUND, params: {} };
}

/** A local path is safe to go back to after logging in. */

// ---------------------------------------------------------------- shell

const shell = {};

function buildShell() {
  const app = document.getElementById('app');
  shell.skip = h('a', { class: 'skip-link', href: '#page', id: 'skip-link' });
  shell.banner = h('div', { id: 'banner-slot' });
  shell.header = h('header', { class: 'app-header', id: 'app-header' });
  shell.main = h('main', { id: 'page', class: 'page', tabindex: '-1', dataset: { ready: 'false' } });
  shell.footer = h('footer', { class: 'app-footer', id: 'app-footer' });
  clear(app, shell.skip, shell.banner, shell.header, shell.main, shell.footer);
  shell.skip.addEventListener('click', (event) => {
    event.preventDefault();
    shell.main.focus();
  });
}

function renderBanner() {
  const simulated = session.system?.llm?.simulated === true;
  if (!simulated) {
    clear(shell.banner);
    return;
  }
  clear(
    shell.banner,
    h(
      'div',
      { class: 'simulator-banner', id: 'simulator-banner', role: 'note', dataset: { test: 'simulator-banner' } },
      h('strong', null, t('banner.title')),
      ' ',
      h('span', null, t('banner.body')),
      ' ',
      h(
        'span',
        { class: 'banner-howto' },
        t('banner.howto.before'),
        h('code', null, 'FASTNPC_LLM_BASE_URL'),
        ', ',
        h('code', null, 'FASTNPC_LLM_API_KEY'),
        t('banner.howto.and'),
        h('code', null, 'FASTNPC_LLM_MODEL'),
        t('banner.howto.or'),
        h('code', null, 'OPENROUTER_API_KEY'),
        t('banner.howto.after'),
      ),
    ),
  );
}

function navLink(id, href, label, key, current) {
  return h(
    'a',
    { id, href, class: 'nav-link', dataset: { test: 'nav-link', nav: key }, 'aria-current': current === key ? 'page' : null },
    label,
  );
}

function renderHeader() {
  const current = currentRoute?.route?.nav;
  const user = session.user;
  const lang = h(
    'select',
    { id: 'lang-switch', class: 'lang-switch', dataset: { test: 'lang-switch' }, 'aria-label': t('lang.label') },
    LANGS.map((code) => h('option', { value: code, selected: code === getLang() }, t(`lang.${code}`))),
  );
  lang.addEventListener('change', () => setLang(lang.value));
  const langLabel = h('label', { class: 'lang-label', for: 'lang-switch' }, t('lang.short'));

  const brand = h('a', { href: user ? '/' : '/login', class: 'brand', id: 'brand' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'N'), 'FastNPC');
  const right = h('div', { class: 'header-tools' }, h('div', { class: 'lang' }, langLabel, lang));
  if (user) {
    const logout = h('button', { type: 'button', id: 'logout', class: 'btn btn-small btn-ghost', dataset: { test: 'logout' } }, t('nav.logout'));
    logout.addEventListener('click', logOut);
    right.append(
      h('span', { class: 'user-name', id: 'current-user', dataset: { test: 'current-user' }, title: t('nav.signedInAs', { name: user.username }) }, user.username),
      logout,
    );
  }
  const top = h('div', { class: 'header-top' }, brand, right);
  const children = [top];
  if (user) {
    const nav = h(
      'nav',
      { class: 'main-nav', 'aria-label': t('nav.label'), id: 'main-nav' },
      navLink('nav-characters', '/', t('nav.characters'), 'characters', current),
      navLink('nav-new-character', '/characters/new', t('nav.new'), 'new', current),
      navLink('nav-groups', '/groups', t('nav.groups'), 'groups', current),
      navLink('nav-settings', '/settings', t('nav.settings'), 'settings', current),
      user.admin ? navLink('nav-admin', '/admin', t('nav.admin'), 'admin', current) : null,
    );
    children.push(nav);
  }
  clear(shell.header, h('div', { class: 'header-inner' }, children));
  shell.skip.textContent = t('nav.skip');
  clear(shell.footer, h('span', null, t('footer.text')));
}

async function logOut() {
  try {
    await api.post('/v1/auth/logout', undefined, { noRedirect: true });
  } catch (error) {
    // Already logged out (401) is what was asked for. Anything else (the network, a 5xx) left
    // the session alive on the server: saying "logged out" then would leave the next person at
    // a shared computer signed in.
    if (!(error instanceof ApiProblem && error.status === 401)) {
      window.alert(t('logout.failed', { message: error?.message || String(error) }));
      return;
    }
  }
  session.user = null;
  navigate('/login', { replace: true });
}

/** Forgets the user and goes to the login page (logout everywhere, account deleted, ...). */
export function loggedOut() {
  session.user = null;
  navigate('/login', { replace: true });
}

// ---------------------------------------------------------------- router

let currentRoute = null;
let currentPage = null; // {controller, cleanups}
let navigationSeq = 0;

export function navigate(to, { replace = false } = {}) {
  const url = new URL(to, location.origin);
  const target = url.pathname + url.search + url.hash;
  if (replace) history.replaceState(null, '', target);
  else if (target !== location.pathname + location.search + location.hash) history.pushState(null, '', target);
  return route();
}

function leavePage() {
  if (!currentPage) return;
  currentPage.controller.abort();
  for (const cleanup of currentPage.cleanups.splice(0).reverse()) {
    try {
      cleanup();
    } catch (error) {
      console.error('page cleanup failed', error);
    }
  }
  currentPage = null;
}

function setTitle(text) {
  document.title = text ? `${text} · FastNPC` : 'FastNPC';
}

async function route({ focus = true } = {}) {
  const seq = ++navigationSeq;
  leavePage();
  const pathname = location.pathname;
  const found = match(pathname);
  let { route: target } = found;
  const params = found.params;
  const query = new URLSearchParams(location.search);

  if (!target.public && !session.user) {
    const next = location.pathname + location.search;
    history.replaceState(null, '', `/login?next=${encodeURIComponent(next)}`);
    return route({ focus });
  }
  if ((target.page === 'login' || target.page === 'register') && session.user) {
    history.replaceState(null, '', safeNext(query.get('next')));
    return route({ focus });
  }

  currentRoute = found;
  renderHeader();
  const controller = new AbortController();
  const page = { controller, cleanups: [] };
  currentPage = page;
  const main = shell.main;
  main.dataset.ready = 'false';
  main.removeAttribute('aria-busy');
  document.body.dataset.page = target.page;
  clear(main, h('p', { class: 'loading', role: 'status' }, t('common.loading')));
  setTitle('');
  if (focus) window.scrollTo(0, 0);

  const ctx = {
    params,
    query,
    path: pathname,
    page: target.page,
    signal: controller.signal,
    navigate,
    setTitle,
    onCleanup: (fn) => page.cleanups.push(fn),
    /** The page is current (not left yet). */
    get active() {
      return currentPage === page && seq === navigationSeq;
    },
    /** Re-renders the current page (after e.g. a retry). */
    reload: () => route({ focus: false }),
    /** Re-renders the header (after the user object changed). */
    refreshShell: () => {
      renderHeader();
      renderBanner();
    },
    loggedOut,
  };

  const isCurrent = () => currentPage === page && seq === navigationSeq;
  try {
    const module = await loadModule(target.module);
    if (!isCurrent()) return;
    clear(main);
    await module.render(main, ctx);
  } catch (error) {
    if (!isCurrent()) return;
    if (error?.name === 'AbortError') return;
    if (error instanceof ApiProblem && error.redirected) return;
    if (error instanceof ApiProblem && error.status === 404) {
      await renderNotFound(main, ctx, isCurrent);
    } else {
      console.error(error);
      renderError(main, error, ctx);
    }
  }
  if (!isCurrent()) return;
  main.dataset.ready = 'true';
  if (focus && !(main.contains(document.activeElement) && document.activeElement !== main)) {
    const heading = main.querySelector('h1');
    if (heading) {
      heading.setAttribute('tabindex', '-1');
      heading.focus({ preventScroll: true });
    }
  }
}

async function renderNotFound(main, ctx, isCurrent) {
  document.body.dataset.page = 'not-found';
  const module = await loadModule(NOT_FOUND.module);
  if (!isCurrent()) return;
  clear(main);
  await module.render(main, ctx);
}

function renderError(main, error, ctx) {
  ctx.setTitle(t('error.title'));
  const retry = h('button', { type: 'button', class: 'btn', id: 'page-retry' }, t('common.retry'));
  retry.addEventListener('click', () => ctx.reload());
  clear(
    main,
    h(
      'section',
      { class: 'card page-error', dataset: { test: 'page-error' } },
      h('h1', null, t('error.title')),
      h('p', { class: 'error-message', role: 'alert', dataset: { test: 'error' } }, error?.message || String(error)),
      h('p', null, retry, ' ', h('a', { href: '/', class: 'btn btn-ghost' }, t('notFound.home'))),
    ),
  );
}

function interceptLinks(event) {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest?.('a[href]');
  if (!link || link.hasAttribute('download') || (link.target && link.target !== '_self')) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin) return;
  if (/^\/(v1|assets)(\/|$)/.test(url.pathname) || url.pathname === '/healthz' || url.pathname === '/readyz') return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return; // in-page anchor
  event.preventDefault();
  navigate(url.pathname + url.search + url.hash);
}

// ---------------------------------------------------------------- boot

async function boot() {
  buildShell();
  document.addEventListener('click', interceptLinks);
  window.addEventListener('popstate', () => route());
  onUnauthorized(() => {
    session.user = null;
    if (location.pathname === '/login' || location.pathname === '/register') return false;
    const next = location.pathname + location.search;
    navigate(`/login?next=${encodeURIComponent(next)}`, { replace: true });
    return true;
  });
  onLangChange(async () => {
    renderBanner();
    await route({ focus: false });
    document.getElementById('lang-switch')?.focus();
  });

  const [system, me] = await Promise.allSettled([
    api.get('/v1/system', { noRedirect: true }),
    api.get('/v1/me', { noRedirect: true }),
  ]);
  session.system = system.status === 'fulfilled' ? system.value : null;
  if (me.status === 'fulfilled') session.user = me.value?.user ?? null;
  else if (!(me.reason instanceof ApiProblem && me.reason.status === 401)) {
    // The server is unreachable or failing: say so instead of pretending to be logged out.
    renderHeader();
    renderBanner();
    document.body.dataset.page = 'error';
    renderError(shell.main, me.reason, {
      setTitle,
      reload: () => location.reload(),
    });
    shell.main.dataset.ready = 'true';
    return;
  }
  renderBanner();
  await route({ focus: false });
}

boot();
