//! The source kinds in the browser: a character started from a name, found on Wikipedia or Baidu
//! Baike (`tests/src/source_fixtures.rs` stands in for both), its fetch on the progress page and
//! the fetched document on the character page; the choice an ambiguous title asks for; the create
//! page with its candidates at desktop and phone width. Every wait is on page state, as in
//! `web_app`, whose page helpers these tests share; screenshots go to the same folder.

use std::time::Duration;

use fastnpc_tests::{
    harness::{TestApp, TestUser},
    sim::{Fault, Rule},
    source_fixtures::SourceFixtures,
    webdriver::Browser,
};
use serde_json::{Value, json};

use crate::web_app::{
    assert_every_control_is_labelled, assert_fits_the_width, count, open, sign_in, texts, wait_for_page,
};

const CANDIDATE: &str = "[data-test=\"source-candidate\"]";

/// The JavaScript condition "the progress row of `step` is `state`".
fn step_is(step: &str, state: &str) -> String {
    format!(
        "document.querySelector('[data-test=\"progress-step\"][data-step=\"{step}\"]')?.dataset.state === '{state}'"
    )
}

/// The JavaScript condition "exactly `n` elements match `css`" (`css` without single quotes).
fn count_is(css: &str, n: usize) -> String {
    format!("document.querySelectorAll('{css}').length === {n}")
}

/// Chooses `value` in the `<select>` matching `css`, as a person picking it would (a `change`).
async fn select(browser: &Browser, css: &str, value: &str) {
    let script = "const s = document.querySelector(arguments[0]); s.value = arguments[1]; \
                  s.dispatchEvent(new Event('change', {bubbles: true})); return s.value";
    let chosen = browser.execute(script, &[json!(css), json!(value)]).await.unwrap();
    assert_eq!(chosen, json!(value), "{css} offers {value}");
}

/// The value of a form control.
async fn value(browser: &Browser, css: &str) -> String {
    browser.property(css, "value").await.unwrap().as_str().unwrap_or_default().to_owned()
}

/// The character the user has (exactly one), as `GET /v1/characters/{id}` shows it.
async fn only_character(app: &TestApp, user: &TestUser) -> Value {
    let listed: Value = app.get("/v1/characters", user).await.json().await.unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one character: {listed}");
    let id = items[0]["id"].as_str().unwrap();
    let character: Value = app.get(&format!("/v1/characters/{id}"), user).await.json().await.unwrap();
    character["character"].clone()
}

#[tokio::test]
async fn a_name_searched_on_wikipedia_becomes_a_character_whose_fetch_and_source_are_shown() {
    let fixtures = SourceFixtures::start().await;
    // The background category's first call hangs until the 5 s call timeout, then its retry
    // answers: the progress page stays long enough to be looked at.
    let app = fixtures.configure(TestApp::builder()).setting("FASTNPC_LLM_TIMEOUT_SECS", "5").spawn().await;
    app.sim.add_rule(Rule {
        when_contains: "背景故事".into(),
        fault: Fault::Stall(Duration::from_secs(60)),
        times: Some(1),
    });
    let user = app.user("seeker").await;
    let browser = Browser::builder().chinese().start().await.unwrap();
    sign_in(&browser, &app, &user).await;

    // Wikipedia is the default, in the edition of the interface's language.
    open(&browser, &app, "/characters/new", "create-character").await;
    assert_eq!(value(&browser, "#source-kind").await, "wikipedia");
    assert_eq!(value(&browser, "#source-lang").await, "zh");

    // Enter in the name searches; the entries come best first, each linking to its article.
    browser.type_into("#character-name", "李白").await.unwrap();
    browser.press_enter("#character-name").await.unwrap();
    browser.wait_until("three entries", &count_is(CANDIDATE, 3)).await.unwrap();
    assert_eq!(texts(&browser, &format!("{CANDIDATE} .candidate-title")).await, ["李白", "杜甫", "李白 (歌曲)"]);
    assert_eq!(browser.attribute("#source-search-status", "data-state").await.unwrap().as_deref(), Some("found"));
    let link = format!("{CANDIDATE}[data-index=\"0\"] [data-test=\"candidate-link\"]");
    assert_eq!(browser.attribute(&link, "target").await.unwrap().as_deref(), Some("_blank"));
    assert_eq!(browser.attribute(&link, "rel").await.unwrap().as_deref(), Some("noopener noreferrer"));
    let href = browser.property(&link, "href").await.unwrap();
    assert_eq!(href, json!("https://zh.wikipedia.org/wiki/%E6%9D%8E%E7%99%BD"));
    assert_eq!(count(&browser, "form[data-kind=\"wikipedia\"] #source-text").await, 1, "pasting stays possible");

    // Choosing an entry marks it; the name typed stays the character's name.
    browser.click(&format!("{CANDIDATE}[data-index=\"0\"] [data-test=\"choose-candidate\"]")).await.unwrap();
    browser.wait_for(&format!("{CANDIDATE}[data-index=\"0\"][data-chosen=\"true\"]")).await.unwrap();
    assert!(browser.text("#source-chosen").await.unwrap().contains("李白"));
    browser.screenshot("create-candidates-desktop").await.unwrap();
    browser.click("#create-submit").await.unwrap();

    // The progress page: fetching the source comes first, done once the categories arrive.
    wait_for_page(&browser, "generating").await;
    browser.wait_for("[data-test=\"progress-step\"][data-step=\"fetching\"]").await.unwrap();
    let first =
        browser.execute("return document.querySelector('#progress-steps li')?.dataset.step", &[]).await.unwrap();
    assert_eq!(first, json!("fetching"), "the fetching row is above the nine categories");
    assert_eq!(count(&browser, "[data-test=\"progress-step\"]").await, 10, "fetching and the nine categories");
    let fetched = format!(
        "{} && {} && {}",
        step_is("fetching", "done"),
        step_is("personality", "done"),
        step_is("background", "pending")
    );
    browser.wait_until("the source fetched, a category written, background still pending", &fetched).await.unwrap();
    browser.screenshot("generating-fetched-desktop").await.unwrap();

    // Ready: the character page names the article it was built from and shows its text, as text.
    wait_for_page(&browser, "character").await;
    let canonical = "https://zh.wikipedia.org/wiki/%E6%9D%8E%E7%99%BD";
    assert_eq!(browser.property("#source-snapshot-url", "href").await.unwrap(), json!(canonical));
    assert_eq!(browser.text("#source-snapshot-url").await.unwrap(), "https://zh.wikipedia.org/wiki/李白");
    assert_eq!(browser.attribute("#source-snapshot-url", "target").await.unwrap().as_deref(), Some("_blank"));
    let rel = browser.attribute("#source-snapshot-url", "rel").await.unwrap().unwrap_or_default();
    assert!(rel.contains("noopener") && rel.contains("noreferrer"), "{rel}");
    assert_eq!(browser.text("#source-snapshot-revision").await.unwrap(), "84512345");
    assert!(!browser.text("#source-snapshot-size").await.unwrap().trim().is_empty());
    browser.click("#source-markdown summary").await.unwrap();
    let markdown = browser.text("#source-markdown-text").await.unwrap();
    assert!(markdown.contains("## 生平"), "the Markdown, as written: {markdown}");
    assert_eq!(count(&browser, "#source-markdown-text *").await, 0, "shown as text, never as markup");
    browser
        .execute("document.getElementById('source-snapshot-url').scrollIntoView({block: 'center'})", &[])
        .await
        .unwrap();
    browser.screenshot("character-source-desktop").await.unwrap();

    let character = only_character(&app, &user).await;
    assert_eq!(character["name"], "李白");
    assert_eq!(character["source"], json!({"kind": "wikipedia", "lang": "zh", "title": "李白"}));
    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn an_ambiguous_baike_title_lists_its_entries_and_the_one_chosen_is_created() {
    let fixtures = SourceFixtures::start().await;
    let app = fixtures.configure(TestApp::builder()).spawn().await;
    let user = app.user("chooser").await;
    let browser = Browser::start().await.unwrap();
    sign_in(&browser, &app, &user).await;
    open(&browser, &app, "/characters/new", "create-character").await;
    select(&browser, "#source-kind", "baike").await;
    browser.wait_gone("#source-lang").await.unwrap();

    // Creating without searching: the title means several lemmas, and the page asks which.
    browser.type_into("#character-name", "李白").await.unwrap();
    browser.click("#create-submit").await.unwrap();
    browser.wait_for("#source-search-status[data-state=\"ambiguous\"]").await.unwrap();
    let ids = browser
        .execute(&format!("return [...document.querySelectorAll('{CANDIDATE}')].map(e => e.dataset.id)"), &[])
        .await
        .unwrap();
    let ids: Vec<&str> = ids.as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(ids.len() >= 3 && ids.contains(&"1043") && ids.contains(&"7179"), "{ids:?}");
    let focused = browser.execute("return document.activeElement?.dataset.test", &[]).await.unwrap();
    assert_eq!(focused, json!("choose-candidate"), "the focus moved to the entries");
    assert!(browser.text("#source-search-status").await.unwrap().contains("李白"));
    let listed: Value = app.get("/v1/characters", &user).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "nothing was created from the ambiguous title");
    browser.screenshot("create-ambiguous-desktop").await.unwrap();

    // The poet, lemma 1043.
    browser.click(&format!("{CANDIDATE}[data-id=\"1043\"] [data-test=\"choose-candidate\"]")).await.unwrap();
    browser.wait_for(&format!("{CANDIDATE}[data-id=\"1043\"][data-chosen=\"true\"]")).await.unwrap();
    browser.click("#create-submit").await.unwrap();
    wait_for_page(&browser, "character").await;
    let href = browser.property("#source-snapshot-url", "href").await.unwrap();
    assert!(href.as_str().unwrap().ends_with("/baike/item/%E6%9D%8E%E7%99%BD/1043"), "{href}");
    let character = only_character(&app, &user).await;
    assert_eq!(character["name"], "李白");
    assert_eq!(character["source"], json!({"kind": "baike", "title": "李白", "id": "1043"}));
    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_create_page_with_candidates_fits_a_phone_and_says_when_nothing_or_an_error_came_back() {
    let fixtures = SourceFixtures::start().await;
    let app = fixtures.configure(TestApp::builder()).spawn().await;
    let user = app.user("pocket").await;
    let browser = Browser::builder().chinese().start().await.unwrap();
    browser.emulate_phone(360, 780).await.unwrap();
    sign_in(&browser, &app, &user).await;
    open(&browser, &app, "/characters/new", "create-character").await;
    assert_fits_the_width(&browser, "the create page").await;
    browser.screenshot("create-phone").await.unwrap();

    // Baike, searched with the button: its meanings, laid out within the phone's width.
    select(&browser, "#source-kind", "baike").await;
    browser.type_into("#character-name", "李白").await.unwrap();
    browser.click("#source-search").await.unwrap();
    browser.wait_for("#source-search-status[data-state=\"found\"]").await.unwrap();
    assert!(count(&browser, CANDIDATE).await >= 3);
    browser.click(&format!("{CANDIDATE}[data-id=\"1043\"] [data-test=\"choose-candidate\"]")).await.unwrap();
    browser.wait_for(&format!("{CANDIDATE}[data-id=\"1043\"][data-chosen=\"true\"]")).await.unwrap();
    assert_fits_the_width(&browser, "the create page with candidates").await;
    assert_every_control_is_labelled(&browser, "the create page with candidates").await;
    browser.screenshot("create-candidates-phone").await.unwrap();

    // A lemma Baike does not have: a clear "nothing found", and no list.
    browser.type_into("#character-name", "无此词条").await.unwrap();
    browser.click("#source-search").await.unwrap();
    browser.wait_for("#source-search-status[data-state=\"empty\"]").await.unwrap();
    assert!(browser.text("#source-search-status").await.unwrap().contains("无此词条"));
    assert_eq!(count(&browser, CANDIDATE).await, 0);
    browser.wait_gone("#source-candidates").await.unwrap();

    // An edition the encyclopedia stand-in cannot answer (it has no French fixtures and answers
    // with an error): the server's 502 detail is shown.
    select(&browser, "#source-kind", "wikipedia").await;
    select(&browser, "#source-lang", "other").await;
    browser.type_into("#source-lang-other", "fr").await.unwrap();
    browser.type_into("#character-name", "李白").await.unwrap();
    browser.click("#source-search").await.unwrap();
    browser.wait_for("#source-search-error").await.unwrap();
    let error = browser.text("#source-search-error").await.unwrap();
    assert!(!error.trim().is_empty() && !error.contains("{\""), "the problem's detail, not JSON: {error:?}");
    assert_eq!(browser.attribute("#source-search-status", "data-state").await.unwrap().as_deref(), Some("error"));
    assert_fits_the_width(&browser, "the create page with a search error").await;
    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}
