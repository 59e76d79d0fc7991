//! The web app in real headless Chromium, as a person uses it: sign up, create a character and
//! watch it being written, read it, chat, and the session rules (another user's character, an
//! expired session, the simulator banner, both languages, phone width). Every wait is on page
//! state (`data-ready`, `data-state`, texts), never a fixed sleep. The suite writes screenshots of
//! the main pages to `target/screenshots/<backend>/`; `docs/screenshots/` holds a copy.
//!
//! Groups, memory, settings and the CSRF check in the browser: `web_app_more`.

use std::time::Duration;

use fastnpc_tests::{
    harness::{PASSWORD, TestApp, TestUser},
    sim::{Fault, Rule, SimConfig},
    webdriver::Browser,
};
use serde_json::{Value, json};

/// Waits until the page `name` has finished its initial load.
pub(crate) async fn wait_for_page(browser: &Browser, name: &str) {
    let condition =
        format!("document.body.dataset.page === '{name}' && document.getElementById('page')?.dataset.ready === 'true'");
    browser.wait_until(&format!("the {name} page, loaded"), &condition).await.unwrap();
}

/// Opens `path` of the app and waits for page `name`.
pub(crate) async fn open(browser: &Browser, app: &TestApp, path: &str, name: &str) {
    browser.goto(&app.url(path)).await.unwrap();
    wait_for_page(browser, name).await;
}

/// Logs `user` (password [`PASSWORD`]) in through the login page; lands on the characters list.
pub(crate) async fn sign_in(browser: &Browser, app: &TestApp, user: &TestUser) {
    open(browser, app, "/login", "login").await;
    browser.type_into("#login-username", &user.username).await.unwrap();
    browser.type_into("#login-password", PASSWORD).await.unwrap();
    browser.click("#login-submit").await.unwrap();
    wait_for_page(browser, "characters").await;
}

/// A browser with `user` signed in.
pub(crate) async fn signed_in(app: &TestApp, user: &TestUser) -> Browser {
    let browser = Browser::start().await.unwrap();
    sign_in(&browser, app, user).await;
    browser
}

/// How many elements match `css` now.
pub(crate) async fn count(browser: &Browser, css: &str) -> u64 {
    let script = "return document.querySelectorAll(arguments[0]).length";
    browser.execute(script, &[json!(css)]).await.unwrap().as_u64().unwrap()
}

/// The texts of the elements matching `css`, in document order.
pub(crate) async fn texts(browser: &Browser, css: &str) -> Vec<String> {
    let script = "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)";
    let found = browser.execute(script, &[json!(css)]).await.unwrap();
    found.as_array().unwrap().iter().map(|text| text.as_str().unwrap().to_owned()).collect()
}

/// Fails if the page is wider than the window (content cut off at phone width).
pub(crate) async fn assert_fits_the_width(browser: &Browser, what: &str) {
    let widths =
        browser.execute("return [document.documentElement.scrollWidth, window.innerWidth]", &[]).await.unwrap();
    let (scroll, window) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    if scroll > window {
        let culprits = browser
            .execute(
                "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > \
                 window.innerWidth + 1).slice(-6).map(e => `${e.tagName}#${e.id}.${e.className} \
                 ${Math.round(e.getBoundingClientRect().right)}px`)",
                &[],
            )
            .await
            .unwrap();
        panic!("{what}: the page is {scroll} px wide in a {window} px window; too wide: {culprits}");
    }
}

/// The JavaScript condition "the progress row of `step` is `state`".
fn step_is(step: &str, state: &str) -> String {
    format!(
        "document.querySelector('[data-test=\"progress-step\"][data-step=\"{step}\"]')?.dataset.state === '{state}'"
    )
}

const DONE_STEPS: &str = "[data-test=\"progress-step\"][data-state=\"done\"]";

#[tokio::test]
async fn a_new_user_signs_up_creates_a_character_watches_it_being_written_through_a_reload_and_reads_it() {
    // The background category's first call hangs until the 5 s call timeout, then its retry
    // answers: a window in which the other steps are done and this one is not.
    let app = TestApp::builder().setting("FASTNPC_LLM_TIMEOUT_SECS", "5").spawn().await;
    app.sim.add_rule(Rule {
        when_contains: "背景故事".into(),
        fault: Fault::Stall(Duration::from_secs(60)),
        times: Some(1),
    });
    let browser = Browser::start().await.unwrap();

    // Sign up from the front door: `/` sends a stranger to the login page.
    browser.goto(&app.url("/")).await.unwrap();
    wait_for_page(&browser, "login").await;
    browser.screenshot("login-desktop").await.unwrap();
    browser.click("#show-register").await.unwrap();
    wait_for_page(&browser, "register").await;
    browser.type_into("#register-username", "newcomer").await.unwrap();
    browser.type_into("#register-password", PASSWORD).await.unwrap();
    browser.type_into("#register-password-confirm", PASSWORD).await.unwrap();
    browser.click("#register-submit").await.unwrap();
    wait_for_page(&browser, "characters").await;
    assert!(browser.text("#current-user").await.unwrap().contains("newcomer"));
    let cookies = browser.cookies().await.unwrap();
    let session = cookies.iter().find(|c| c.name == "fastnpc_session").expect("the session cookie");
    assert!(session.http_only, "page scripts cannot read the session");
    assert_eq!(session.same_site.as_deref(), Some("Strict"));
    let visible_to_scripts = browser.execute("return document.cookie", &[]).await.unwrap();
    assert!(!visible_to_scripts.as_str().unwrap().contains(&session.value), "document.cookie hides the session");

    // Create: name and pasted source.
    browser.click("#nav-new-character").await.unwrap();
    wait_for_page(&browser, "create-character").await;
    browser.type_into("#character-name", "诸葛亮").await.unwrap();
    browser.type_into("#source-text", &fastnpc_tests::harness::sample_source("诸葛亮")).await.unwrap();
    browser.screenshot("create-desktop").await.unwrap();
    browser.click("#create-submit").await.unwrap();
    wait_for_page(&browser, "generating").await;

    // Live: the other steps tick while the stalled one is still pending.
    let steps = [
        "basic_identity",
        "personality",
        "background",
        "knowledge",
        "dialogue_rules",
        "tasks",
        "worldview",
        "system_params",
        "source",
    ];
    assert_eq!(count(&browser, "[data-test=\"progress-step\"]").await, 9, "nine rows");
    let others_done =
        steps.iter().filter(|step| **step != "background").map(|step| step_is(step, "done")).collect::<Vec<_>>();
    let partly = format!("{} && {}", others_done.join(" && "), step_is("background", "pending"));
    browser.wait_until("eight steps ticked, background still pending", &partly).await.unwrap();
    assert_eq!(browser.property("#progress-bar", "value").await.unwrap().as_f64(), Some(8.0));
    browser.screenshot("generating-desktop").await.unwrap();

    // A reload in the middle resumes where it was: the eight ticks are there as soon as the page
    // is ready, before the stalled step can finish, and the stream goes on from there.
    let url_before = browser.current_url().await.unwrap();
    browser.refresh().await.unwrap();
    wait_for_page(&browser, "generating").await;
    assert_eq!(browser.current_url().await.unwrap(), url_before);
    assert_eq!(count(&browser, DONE_STEPS).await, 8, "the progress came back at once, not from zero");
    let still_pending = browser.execute(&format!("return {}", step_is("background", "pending")), &[]).await.unwrap();
    assert_eq!(still_pending, json!(true), "the stalled step had not finished yet");

    // The retry of the stalled call finishes the character; the page becomes its profile.
    wait_for_page(&browser, "character").await;
    let categories = count(&browser, "[data-test=\"profile-category\"]").await;
    assert_eq!(categories, 8, "the eight persona categories, laid out");
    assert!(!browser.text("#character-brief").await.unwrap().trim().is_empty(), "the brief");
    assert!(!browser.text("#character-source").await.unwrap().trim().is_empty(), "where it came from");
    let page_text = browser.text("#page").await.unwrap();
    assert!(!page_text.contains("{\""), "no raw JSON on the profile page");
    browser.screenshot("character-desktop").await.unwrap();

    // The list: newest first, filtered as you type.
    browser.click("#nav-characters").await.unwrap();
    wait_for_page(&browser, "characters").await;
    assert_eq!(count(&browser, "[data-test=\"character-item\"]").await, 1);
    browser.screenshot("characters-desktop").await.unwrap();
    browser.type_into("#character-filter", "曹操").await.unwrap();
    browser
        .wait_until(
            "the filter hides the character",
            "document.querySelectorAll('[data-test=\"character-item\"]:not([hidden])').length === 0",
        )
        .await
        .unwrap();
    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

/// A ready character of a new user, and that user.
async fn user_with_character(app: &TestApp, username: &str, name: &str) -> (TestUser, String) {
    let user = app.user(username).await;
    let character = app.ready_character(&user, name).await;
    (user, character)
}

/// The replies (assistant messages) on the chat page, in order.
async fn replies(browser: &Browser) -> Vec<String> {
    texts(browser, "[data-test=\"chat-message\"][data-role=\"assistant\"] .bubble-text").await
}

/// The stored conversation, oldest first: (role, content).
async fn stored_conversation(app: &TestApp, user: &TestUser, character: &str) -> Vec<(String, String)> {
    let history: Value =
        app.get(&format!("/v1/characters/{character}/messages?limit=200"), user).await.json().await.unwrap();
    history["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|m| (m["author"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned()))
        .collect()
}

async fn send(browser: &Browser, text: &str) {
    browser.type_into("#chat-input", text).await.unwrap();
    browser.press_enter("#chat-input").await.unwrap();
}

#[tokio::test]
async fn chat_replies_stream_token_by_token_survive_a_reset_keep_their_order_and_can_fail_and_be_retried() {
    // Slow tokens: a reply takes seconds, so its middle can be seen.
    let sim = SimConfig {
        inter_token_delay: Duration::from_millis(40),
        reply_tokens: 60,
        tokens_per_chunk: 1,
        ..SimConfig::default()
    };
    let app = TestApp::builder().sim(sim).setting("FASTNPC_LLM_MAX_RETRIES", "1").spawn().await;
    let (user, character) = user_with_character(&app, "talker", "苏轼").await;
    let browser = signed_in(&app, &user).await;
    open(&browser, &app, &format!("/characters/{character}/chat"), "chat").await;

    // Tokens arrive before the reply ends.
    send(&browser, "你好，先生").await;
    let streaming = "[data-test=\"chat-message\"][data-role=\"assistant\"][data-state=\"streaming\"] .bubble-text";
    browser
        .wait_until(
            "part of the reply, still streaming",
            &format!("(document.querySelector('{}')?.textContent || '').length > 0", streaming.replace('\'', "\\'")),
        )
        .await
        .unwrap();
    let partial = browser.text(streaming).await.unwrap();
    browser.screenshot("chat-streaming-desktop").await.unwrap();
    browser.wait_until("the reply done", "document.querySelectorAll('[data-test=\"chat-message\"][data-role=\"assistant\"][data-state=\"done\"]').length === 1").await.unwrap();
    let whole = replies(&browser).await.remove(0);
    assert!(whole.starts_with(partial.trim_end()) && whole.len() > partial.len(), "{partial:?} grew into {whole:?}");

    // The model's stream breaks once mid-reply: the page drops the partial text on `reset` and
    // shows the final reply exactly once.
    app.sim.add_rule(Rule { when_contains: "断线的问题".into(), fault: Fault::MidStreamError, times: Some(1) });
    send(&browser, "断线的问题").await;
    browser.wait_until("two replies done", "document.querySelectorAll('[data-test=\"chat-message\"][data-role=\"assistant\"][data-state=\"done\"]').length === 2").await.unwrap();
    let stored = stored_conversation(&app, &user, &character).await;
    let shown = replies(&browser).await;
    assert_eq!(shown[1], stored[3].1, "the reply after a reset is the stored one, once");

    // Two messages in a row, the second sent while the first reply streams: both answered, in
    // the order sent.
    send(&browser, "第一个问题").await;
    browser.wait_for(streaming).await.unwrap();
    send(&browser, "第二个问题").await;
    browser.wait_until("four replies done", "document.querySelectorAll('[data-test=\"chat-message\"][data-role=\"assistant\"][data-state=\"done\"]').length === 4").await.unwrap();
    let stored = stored_conversation(&app, &user, &character).await;
    let shown_users = texts(&browser, "[data-test=\"chat-message\"][data-role=\"user\"] .bubble-text").await;
    let stored_users: Vec<String> = stored.iter().filter(|(role, _)| role == "user").map(|(_, c)| c.clone()).collect();
    assert_eq!(shown_users, stored_users, "messages in the order sent");
    assert_eq!(&shown_users[2..], ["第一个问题", "第二个问题"]);
    let stored_replies: Vec<String> =
        stored.iter().filter(|(author, _)| author != "user").map(|(_, c)| c.clone()).collect();
    assert_eq!(replies(&browser).await, stored_replies, "each reply after its message, whole");

    // A reply that fails for good shows its error and a retry that works.
    app.sim.add_rule(Rule { when_contains: "会失败的问题".into(), fault: Fault::ServerError, times: None });
    send(&browser, "会失败的问题").await;
    let failed = "[data-test=\"chat-message\"][data-role=\"assistant\"][data-state=\"failed\"]";
    browser.wait_for(failed).await.unwrap();
    let error = browser.text(failed).await.unwrap();
    assert!(!error.trim().is_empty() && !error.contains("{\""), "the error's message, not JSON: {error:?}");
    browser.screenshot("chat-failed-desktop").await.unwrap();
    app.sim.reset();
    browser.click(&format!("{failed} [data-test=\"retry-reply\"]")).await.unwrap();
    browser.wait_until("five replies done", "document.querySelectorAll('[data-test=\"chat-message\"][data-role=\"assistant\"][data-state=\"done\"]').length === 5").await.unwrap();

    // A streaming reply can be stopped.
    send(&browser, "请讲一个很长的故事").await;
    browser.wait_for(streaming).await.unwrap();
    browser.click("[data-test=\"cancel-reply\"]").await.unwrap();
    browser
        .wait_for("[data-test=\"chat-message\"][data-role=\"assistant\"] [data-test=\"retry-reply\"]")
        .await
        .unwrap();
    browser.assert_no_console_errors().await.unwrap();
    browser.screenshot("chat-desktop").await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn another_users_character_is_not_found_and_an_expired_session_returns_to_the_login_and_back() {
    let app = TestApp::spawn().await;
    let (_owner, character) = user_with_character(&app, "owner", "李白").await;
    let intruder = app.user("intruder").await;
    let browser = signed_in(&app, &intruder).await;

    for path in
        [format!("/characters/{character}"), format!("/characters/{character}/chat"), "/no/such/page".to_owned()]
    {
        open(&browser, &app, &path, "not-found").await;
        browser.wait_for("[data-test=\"not-found\"]").await.unwrap();
        let text = browser.text("#page").await.unwrap();
        assert!(!text.contains("李白") && !text.contains("{\""), "{path}: nothing of the character, no JSON: {text}");
    }

    // The session ends elsewhere (log out everywhere from a script); the next step in the page
    // goes to the login page, and logging in comes back to it.
    open(&browser, &app, "/groups", "groups").await;
    let out = app.request(reqwest::Method::POST, "/v1/auth/logout-everywhere", Some(&intruder)).send().await.unwrap();
    assert_eq!(out.status(), 204);
    browser.click("#nav-settings").await.unwrap();
    wait_for_page(&browser, "login").await;
    let url = browser.current_url().await.unwrap();
    assert!(url.contains("next=") && url.contains("settings"), "the login remembers where the person was: {url}");
    browser.type_into("#login-username", &intruder.username).await.unwrap();
    browser.type_into("#login-password", PASSWORD).await.unwrap();
    browser.click("#login-submit").await.unwrap();
    wait_for_page(&browser, "settings").await;
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_simulator_banner_both_languages_and_phone_width() {
    let app = TestApp::builder().setting("FASTNPC_LLM_SIMULATED", "true").spawn().await;
    let (user, character) = user_with_character(&app, "mobile", "杜甫").await;
    let browser = Browser::builder().chinese().start().await.unwrap();
    browser.emulate_phone(360, 780).await.unwrap();

    // The banner is on every page, the login page included; the interface follows the browser's
    // language (Chinese here).
    open(&browser, &app, "/login", "login").await;
    browser.wait_for("[data-test=\"simulator-banner\"]").await.unwrap();
    assert_eq!(browser.attribute("html", "lang").await.unwrap().as_deref(), Some("zh-CN"));
    browser.screenshot("login-phone").await.unwrap();
    sign_in(&browser, &app, &user).await;
    for (path, page, shot) in [
        ("/".to_owned(), "characters", "characters-phone"),
        (format!("/characters/{character}"), "character", "character-phone"),
        (format!("/characters/{character}/chat"), "chat", "chat-phone"),
        ("/groups".to_owned(), "groups", "groups-phone"),
        ("/settings".to_owned(), "settings", "settings-phone"),
    ] {
        open(&browser, &app, &path, page).await;
        browser.wait_for("[data-test=\"simulator-banner\"]").await.unwrap();
        assert_fits_the_width(&browser, &path).await;
        browser.screenshot(shot).await.unwrap();
    }

    // Switched to English, at once and for later pages.
    let chinese_nav = browser.text("#nav-settings").await.unwrap();
    browser.execute(
        "const s = document.getElementById('lang-switch'); s.value = 'en'; s.dispatchEvent(new Event('change', {bubbles: true}))",
        &[],
    )
    .await
    .unwrap();
    browser.wait_until("the page in English", "document.documentElement.lang === 'en'").await.unwrap();
    wait_for_page(&browser, "settings").await;
    let english_nav = browser.text("#nav-settings").await.unwrap();
    assert_ne!(chinese_nav, english_nav, "the navigation was translated");
    open(&browser, &app, "/", "characters").await;
    assert_eq!(browser.attribute("html", "lang").await.unwrap().as_deref(), Some("en"), "the choice is kept");
    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn over_long_input_is_refused_in_the_page_a_failed_generation_can_be_retried_and_deleting_asks_first() {
    let app = TestApp::spawn().await;
    // The background category never parses: the generation fails for good.
    app.sim.add_rule(Rule { when_contains: "背景故事".into(), fault: Fault::InvalidJson, times: None });
    let user = app.user("retrier").await;
    let browser = signed_in(&app, &user).await;
    open(&browser, &app, "/characters/new", "create-character").await;

    // A name over the API's limit (pasted past `maxlength`) is refused before anything is sent.
    let too_long = "名".repeat(65);
    let paste = "const e = document.getElementById('character-name'); e.removeAttribute('maxlength'); \
                 e.value = arguments[0]; e.dispatchEvent(new Event('input', {bubbles: true}))";
    browser.execute(paste, &[json!(too_long)]).await.unwrap();
    browser.type_into("#source-text", &fastnpc_tests::harness::sample_source("王安石")).await.unwrap();
    browser.click("#create-submit").await.unwrap();
    browser
        .wait_until(
            "the name refused, naming the limit",
            "(document.getElementById('create-error')?.textContent || '').includes('64')",
        )
        .await
        .unwrap();
    let listed: Value = app.get("/v1/characters", &user).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "nothing was sent");

    // The failure is shown as its message, with a retry that (the model fixed) finishes it.
    browser.type_into("#character-name", "王安石").await.unwrap();
    browser.click("#create-submit").await.unwrap();
    wait_for_page(&browser, "generating").await;
    browser.wait_for("#job-status[data-status=\"failed\"]").await.unwrap();
    let error = browser.text("#job-error").await.unwrap();
    assert!(!error.trim().is_empty() && !error.contains("{\""), "the error's message, not JSON: {error:?}");
    browser.screenshot("generating-failed-desktop").await.unwrap();
    app.sim.reset();
    browser.click("#retry-job").await.unwrap();
    wait_for_page(&browser, "character").await;
    assert_eq!(count(&browser, "[data-test=\"profile-category\"]").await, 8);

    // Deleting asks first: cancelling keeps the character, confirming deletes it.
    open(&browser, &app, "/", "characters").await;
    browser.click("[data-test=\"delete-character\"]").await.unwrap();
    browser.wait_for("#confirm-dialog[open]").await.unwrap();
    browser.click("#confirm-cancel").await.unwrap();
    browser.wait_gone("#confirm-dialog[open]").await.unwrap();
    assert_eq!(count(&browser, "[data-test=\"character-item\"]").await, 1, "cancelled: still there");
    browser.click("[data-test=\"delete-character\"]").await.unwrap();
    browser.click("#confirm-ok").await.unwrap();
    browser
        .wait_until("the character gone", "document.querySelectorAll('[data-test=\"character-item\"]').length === 0")
        .await
        .unwrap();
    let listed: Value = app.get("/v1/characters", &user).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "deleted on the server too");
    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_admin_page_shows_users_and_stats_and_disables_and_enables_an_account_and_nobody_else_sees_it() {
    let app = TestApp::builder()
        .setting("FASTNPC_ADMIN_USERNAME", "overseer")
        .setting("FASTNPC_ADMIN_PASSWORD", PASSWORD)
        .spawn()
        .await;
    let admin = app.login("overseer", PASSWORD).await;
    let member = app.user("member").await;
    let me: Value = app.get("/v1/me", &member).await.json().await.unwrap();
    let member_id = me["user"]["id"].as_str().unwrap().to_owned();

    // Not for members: no link, and the page is not found.
    let browser = signed_in(&app, &member).await;
    assert_eq!(count(&browser, "#nav-admin").await, 0);
    open(&browser, &app, "/admin", "not-found").await;
    browser.close().await.unwrap();

    let browser = signed_in(&app, &admin).await;
    browser.click("#nav-admin").await.unwrap();
    wait_for_page(&browser, "admin").await;
    let users = browser.text("[data-test=\"stat-users\"]").await.unwrap();
    assert!(users.contains('2'), "two accounts counted: {users:?}");
    let row = format!("[data-test=\"admin-user\"][data-id=\"{member_id}\"]");
    assert_eq!(browser.attribute(&row, "data-disabled").await.unwrap().as_deref(), Some("false"));
    browser.screenshot("admin-desktop").await.unwrap();
    browser.click(&format!("{row} [data-test=\"admin-disable\"]")).await.unwrap();
    browser.click("#confirm-ok").await.unwrap();
    browser.wait_for(&format!("{row}[data-disabled=\"true\"]")).await.unwrap();
    assert_eq!(app.get("/v1/me", &member).await.status(), 401, "the member's sessions ended");
    browser.click(&format!("{row} [data-test=\"admin-enable\"]")).await.unwrap();
    browser.wait_for(&format!("{row}[data-disabled=\"false\"]")).await.unwrap();
    assert_eq!(app.login("member", PASSWORD).await.username, "member", "the account works again");
    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

/// The id of the focused element, and whether its focus is drawn (an outline or a ring).
async fn focused(browser: &Browser) -> (String, bool) {
    let script = "const e = document.activeElement; const s = e && getComputedStyle(e); \
                  return [e?.id || e?.tagName || '', !!s && (s.outlineStyle !== 'none' && s.outlineWidth !== '0px' \
                  || s.boxShadow !== 'none')]";
    let found = browser.execute(script, &[]).await.unwrap();
    (found[0].as_str().unwrap().to_owned(), found[1].as_bool().unwrap())
}

/// Fails naming every visible form control that has no accessible name (label, `aria-label`,
/// `aria-labelledby`, text or title).
pub(crate) async fn assert_every_control_is_labelled(browser: &Browser, page: &str) {
    let script = "return [...document.querySelectorAll('input, select, textarea, button')]
        .filter(e => e.type !== 'hidden' && e.getClientRects().length > 0 && !e.closest('[aria-hidden=\"true\"]'))
        .filter(e => !(e.labels?.length || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby')
            || e.textContent.trim() || e.title))
        .map(e => e.outerHTML.slice(0, 120))";
    let unlabelled = browser.execute(script, &[]).await.unwrap();
    assert_eq!(unlabelled, json!([]), "{page}: controls without a label");
}

#[tokio::test]
async fn the_keyboard_alone_signs_in_with_focus_drawn_and_every_control_is_labelled() {
    let app = TestApp::spawn().await;
    let (user, character) = user_with_character(&app, "keyboard", "白居易").await;
    let browser = Browser::start().await.unwrap();
    // A `next` that URL parsing turns into another origin (`/<tab>/evil.example` is
    // `//evil.example`) must not be followed after the login.
    open(&browser, &app, "/login?next=%2F%09%2Fevil.example", "login").await;
    assert_every_control_is_labelled(&browser, "login").await;

    // The login page puts the focus in the username field (else Tab gets there from the top),
    // and every focus is drawn.
    browser.execute("window.focus()", &[]).await.unwrap();
    let mut stops = Vec::new();
    loop {
        let (id, drawn) = focused(&browser).await;
        if id == "login-username" {
            assert!(drawn, "the focus on {id} is not drawn");
            break;
        }
        browser.press_key(fastnpc_tests::webdriver::keys::TAB).await.unwrap();
        stops.push(id);
        assert!(stops.len() < 15, "Tab never reached the username field: {stops:?}");
    }
    browser.find(":focus").await.unwrap().send_keys(&user.username).await.unwrap();
    browser.press_key(fastnpc_tests::webdriver::keys::TAB).await.unwrap();
    assert_eq!(focused(&browser).await, ("login-password".to_owned(), true), "Tab goes on to the password, drawn");
    let password = format!("{PASSWORD}{}", fastnpc_tests::webdriver::keys::ENTER);
    browser.find(":focus").await.unwrap().send_keys(&password).await.unwrap();
    wait_for_page(&browser, "characters").await;
    assert_eq!(browser.current_url().await.unwrap(), app.url("/"), "home, on this origin");
    // Signed in already, the login page passes straight on to `next`: the same rule.
    open(&browser, &app, "/login?next=%2F%09%2Fevil.example", "characters").await;
    assert_eq!(browser.current_url().await.unwrap(), app.url("/"));

    for (path, page) in [
        ("/".to_owned(), "characters"),
        ("/characters/new".to_owned(), "create-character"),
        (format!("/characters/{character}"), "character"),
        (format!("/characters/{character}/chat"), "chat"),
        ("/groups".to_owned(), "groups"),
        ("/settings".to_owned(), "settings"),
    ] {
        open(&browser, &app, &path, page).await;
        assert_every_control_is_labelled(&browser, page).await;
    }
    browser.close().await.unwrap();
    app.stop().await;
}
