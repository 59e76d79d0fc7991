//! The web app in real headless Chromium, continued: groups, the memory panel, settings and API
//! keys, the CSRF check as a browser meets it, and the API reference page (`/docs`). Every wait
//! is on page state, as in `web_app`, whose page helpers these tests share.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::header,
    response::{Html, Response},
    routing::get,
};
use fastnpc_tests::{
    harness::{PASSWORD, TestApp, TestUser, sample_source},
    sim::{Fault, Rule, SimConfig},
    webdriver::Browser,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    groups::moderator_says,
    web_app::{assert_fits_the_width, count, open, signed_in, texts, wait_for_page},
};

const GROUP_MESSAGE: &str = "[data-test=\"group-message\"]";
const DONE_REPLY: &str = "[data-test=\"group-message\"][data-author=\"character\"][data-state=\"done\"]";
const STREAMING_REPLY: &str = "[data-test=\"group-message\"][data-author=\"character\"][data-state=\"streaming\"]";
const ANNOUNCEMENT: &str = "[data-test=\"speaker-announcement\"]";

/// The JavaScript condition "exactly `n` elements match `css`" (`css` without single quotes).
fn count_is(css: &str, n: usize) -> String {
    format!("document.querySelectorAll('{css}').length === {n}")
}

/// What `fetch(url, init)` from the page answers: its status (0 for an opaque answer), or the
/// error it threw.
async fn page_fetch(browser: &Browser, url: &str, init: Value) -> Value {
    let script = "const [url, init, done] = arguments;
        fetch(url, init).then(r => done(r.status), e => done('threw: ' + e));";
    browser.execute_async(script, &[json!(url), init]).await.unwrap()
}

/// The group transcript on the page, in order: (author, message id, speaker id, text, state).
async fn page_transcript(browser: &Browser) -> Vec<[String; 5]> {
    let script = "return [...document.querySelectorAll(arguments[0])].map(e => [e.dataset.author,
        e.dataset.id || '', e.dataset.speaker || '', e.querySelector('.bubble-text').textContent, e.dataset.state])";
    let rows = browser.execute(script, &[json!(GROUP_MESSAGE)]).await.unwrap();
    rows.as_array().unwrap().iter().map(|row| std::array::from_fn(|i| row[i].as_str().unwrap().to_owned())).collect()
}

/// The stored group transcript, oldest first, shaped as [`page_transcript`] (all `done`).
async fn stored_transcript(app: &TestApp, user: &TestUser, group: &str) -> Vec<[String; 5]> {
    let history: Value = app.get(&format!("/v1/groups/{group}/messages?limit=200"), user).await.json().await.unwrap();
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    history["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|m| [text(&m["author"]), text(&m["id"]), text(&m["character_id"]), text(&m["content"]), "done".into()])
        .collect()
}

/// The ids of the group's members, as the API lists them, sorted.
async fn member_ids(app: &TestApp, user: &TestUser, group: &str) -> Vec<String> {
    let body: Value = app.get(&format!("/v1/groups/{group}"), user).await.json().await.unwrap();
    let members = body["group"]["members"].as_array().unwrap();
    let mut ids: Vec<String> = members.iter().map(|m| m["character_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// `ids`, sorted.
fn sorted<const N: usize>(mut ids: [&String; N]) -> Vec<String> {
    ids.sort();
    ids.into_iter().cloned().collect()
}

async fn set_rounds(app: &TestApp, user: &TestUser, rounds: i32) {
    let body = json!({"max_group_rounds": rounds});
    let response = app.request(Method::PATCH, "/v1/me", Some(user)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

async fn say_in_group(browser: &Browser, text: &str) {
    browser.type_into("#group-input", text).await.unwrap();
    browser.press_enter("#group-input").await.unwrap();
}

#[tokio::test]
async fn a_group_created_in_the_page_runs_two_speakers_is_interrupted_by_a_new_message_and_changes_members() {
    let app = TestApp::builder().setting("FASTNPC_GROUP_TURN_PAUSE_MS", "1500").spawn().await;
    let user = app.user("poet").await;
    let (li_bai, du_fu, wang_wei) = tokio::join!(
        app.ready_character(&user, "李白"),
        app.ready_character(&user, "杜甫"),
        app.ready_character(&user, "王维"),
    );
    let browser = signed_in(&app, &user).await;

    // Create the group in the page: a name and two of the three characters.
    open(&browser, &app, "/groups", "groups").await;
    browser.type_into("#group-name", "诗社").await.unwrap();
    for id in [&li_bai, &du_fu] {
        browser.click(&format!("[data-test=\"group-member-option\"][data-id=\"{id}\"]")).await.unwrap();
    }
    browser.click("#group-create").await.unwrap();
    wait_for_page(&browser, "group").await;
    let url = browser.current_url().await.unwrap();
    let group = url.rsplit('/').next().unwrap().to_owned();
    let created: Value = app.get(&format!("/v1/groups/{group}"), &user).await.json().await.unwrap();
    assert_eq!(created["group"]["name"], "诗社", "{url}");
    assert_eq!(member_ids(&app, &user, &group).await, sorted([&li_bai, &du_fu]));

    // Two rounds: the moderator gives the turn to 李白, then to 杜甫.
    set_rounds(&app, &user, 2).await;
    app.sim.add_rule(moderator_says("李白", 0.9, Some(1)));
    app.sim.add_rule(moderator_says("杜甫", 0.85, Some(1)));
    say_in_group(&browser, "诸位，今晚赏月作诗如何？").await;
    let two_rounds = format!(
        "{} && {} && !document.getElementById('waiting-indicator').hidden",
        count_is(ANNOUNCEMENT, 2),
        count_is(DONE_REPLY, 2)
    );
    browser.wait_until("two announced replies, then waiting", &two_rounds).await.unwrap();
    let speakers = browser
        .execute(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.dataset.speaker)",
            &[json!(ANNOUNCEMENT)],
        )
        .await
        .unwrap();
    assert_eq!(speakers, json!([li_bai, du_fu]), "announced in the order chosen");
    let announced = texts(&browser, ANNOUNCEMENT).await;
    for (text, name, confidence) in [(&announced[0], "李白", "90%"), (&announced[1], "杜甫", "85%")] {
        assert!(
            text.contains(name) && text.contains("轮到他了") && text.contains(confidence),
            "name, reason and confidence: {text:?}"
        );
    }
    assert_eq!(browser.attribute("#waiting-indicator", "data-reason").await.unwrap().as_deref(), Some("max_rounds"));
    let shown = page_transcript(&browser).await;
    let speakers: Vec<&str> = shown.iter().map(|row| row[2].as_str()).collect();
    assert_eq!(speakers, ["", li_bai.as_str(), du_fu.as_str()], "each reply in its speaker's bubble");
    assert_eq!(shown, stored_transcript(&app, &user, &group).await, "the page shows what was stored");

    // The interrupt: the first loop of three rounds is pausing after its first reply when the
    // next message is sent.
    set_rounds(&app, &user, 3).await;
    app.sim.add_rule(moderator_says("杜甫", 0.9, None));
    say_in_group(&browser, "第一句").await;
    browser.wait_until("the first reply of the loop", &count_is(DONE_REPLY, 3)).await.unwrap();
    // Slow replies now, so that the new loop's first one is seen streaming.
    let quick = app.sim.config();
    app.sim.set_config(SimConfig { inter_token_delay: Duration::from_millis(60), reply_tokens: 30, ..quick.clone() });
    say_in_group(&browser, "第二句，打断一下").await;
    let streaming =
        format!("[...document.querySelectorAll('{STREAMING_REPLY} .bubble-text')].some(e => e.textContent.length > 0)");
    browser.wait_until("a reply of the new loop, streaming", &streaming).await.unwrap();
    app.sim.set_config(quick);

    let history: Value = app.get(&format!("/v1/groups/{group}/messages?limit=200"), &user).await.json().await.unwrap();
    // The first loop's job is the one that stored the reply to "第一句".
    let items: Vec<&Value> = history["items"].as_array().unwrap().iter().rev().collect();
    let first = items.iter().position(|m| m["content"] == "第一句").expect("the first message");
    let first_loop = items[first + 1]["job_id"].as_str().expect("the reply's loop");
    let first_job = app.wait_for_job(&user, first_loop).await;
    assert_eq!(first_job["status"], "cancelled", "{first_job}");
    assert_eq!(first_job["result"]["stopped"], "interrupted");
    assert_eq!(first_job["result"]["rounds"], 1, "no round after the interruption");

    let done = format!("{} && !document.getElementById('waiting-indicator').hidden", count_is(DONE_REPLY, 6));
    browser.wait_until("the new loop's three replies, then waiting", &done).await.unwrap();
    let shown = page_transcript(&browser).await;
    let authors: Vec<&str> = shown.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        authors,
        ["user", "character", "character", "user", "character", "user", "character", "character", "character"],
        "the second message after the first loop's reply, then the new loop"
    );
    assert_eq!(shown[5][3], "第二句，打断一下");
    assert_eq!(shown, stored_transcript(&app, &user, &group).await, "the page shows what was stored, in order");
    assert_eq!(count(&browser, "[data-state=\"failed\"]").await, 0, "nothing shown as failed");

    // Members: add the third character, then remove it.
    browser
        .execute(
            "const s = document.getElementById('add-member-select'); s.value = arguments[0];
             s.dispatchEvent(new Event('change', {bubbles: true}));",
            &[json!(wang_wei)],
        )
        .await
        .unwrap();
    browser.click("#add-member").await.unwrap();
    browser.wait_for(&format!("[data-test=\"group-member\"][data-id=\"{wang_wei}\"]")).await.unwrap();
    assert_eq!(member_ids(&app, &user, &group).await, sorted([&li_bai, &du_fu, &wang_wei]));
    assert_fits_the_width(&browser, "the group page").await;
    browser.screenshot("group-desktop").await.unwrap();
    browser.click(&format!("[data-test=\"remove-member\"][data-id=\"{wang_wei}\"]")).await.unwrap();
    browser.wait_gone(&format!("[data-test=\"group-member\"][data-id=\"{wang_wei}\"]")).await.unwrap();
    assert_eq!(member_ids(&app, &user, &group).await, sorted([&li_bai, &du_fu]));
    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_memory_entry_added_in_the_panel_is_saved_and_a_running_compression_is_shown() {
    // A compression's first model call hangs until the 3 s call timeout, then its retry answers:
    // a window in which the memory is being compressed.
    let app = TestApp::builder().setting("FASTNPC_LLM_TIMEOUT_SECS", "3").spawn().await;
    let user = app.user("keeper").await;
    let character = app.ready_character(&user, "诸葛亮").await;
    let budgets = json!({"memory_budgets": {"session": 50, "short_term": 4000, "long_term": 4000}});
    assert_eq!(app.request(Method::PATCH, "/v1/me", Some(&user)).json(&budgets).send().await.unwrap().status(), 200);
    let memories = format!("/v1/characters/{character}/memories");
    let browser = signed_in(&app, &user).await;
    open(&browser, &app, &format!("/characters/{character}/chat"), "chat").await;

    // Open at the default 1280 px width.
    assert_eq!(browser.property("#memory-panel", "open").await.unwrap(), json!(true), "the panel is open");
    browser.click("#memory-edit").await.unwrap();
    browser.click("#memory-add-long").await.unwrap();
    let inputs = count(&browser, "#memory-long [data-test=\"memory-entry-input\"]").await;
    assert_eq!(inputs, 1, "one new, empty entry");
    let entry = "主公喜欢羽扇纶巾";
    browser.type_into("#memory-long_term-0", entry).await.unwrap();
    browser.click("#memory-save").await.unwrap();
    browser.wait_for_text("#memory-status", "Memory saved").await.unwrap();
    let memory: Value = app.get(&memories, &user).await.json().await.unwrap();
    let long: Vec<&str> =
        memory["long_term"].as_array().unwrap().iter().map(|e| e["content"].as_str().unwrap()).collect();
    assert_eq!(long, [entry], "{memory}");

    browser.refresh().await.unwrap();
    wait_for_page(&browser, "chat").await;
    let shown = texts(&browser, "#memory-long [data-test=\"memory-entry\"]").await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].contains(entry), "{shown:?}");
    assert_eq!(count(&browser, "#memory-short [data-test=\"memory-entry\"]").await, 0, "no short-term memory yet");

    // A reply outgrows the 50-character session budget: its compression is shown while it runs.
    app.sim.add_rule(Rule {
        when_contains: "压缩成".into(),
        fault: Fault::Stall(Duration::from_secs(60)),
        times: Some(1),
    });
    browser.type_into("#chat-input", "第1问：暗号是青龙一号，请记住").await.unwrap();
    browser.press_enter("#chat-input").await.unwrap();
    browser.wait_for("#memory-watch").await.unwrap();
    let memory: Value = app.get(&memories, &user).await.json().await.unwrap();
    assert_eq!(memory["compressing"], true, "shown while the API says so: {memory}");
    browser.wait_for_text("#memory-status", "Memory updated").await.unwrap();
    browser.wait_gone("#memory-watch").await.unwrap();
    let memory: Value = app.get(&memories, &user).await.json().await.unwrap();
    assert_eq!(memory["compressing"], false, "{memory}");
    let stored: Vec<&str> =
        memory["short_term"].as_array().unwrap().iter().map(|e| e["content"].as_str().unwrap()).collect();
    assert!(!stored.is_empty(), "the compression wrote short-term memory: {memory}");
    let shown = texts(&browser, "#memory-short [data-test=\"memory-entry\"] .memory-text").await;
    assert_eq!(shown, stored, "the panel shows the compressed memory");
    assert_fits_the_width(&browser, "the chat page").await;
    browser.screenshot("memory-desktop").await.unwrap();
    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn settings_are_saved_an_api_key_is_shown_once_works_and_is_revoked_and_the_password_changes() {
    let app = TestApp::spawn().await;
    let user = app.user("scripter").await;
    let browser = signed_in(&app, &user).await;
    open(&browser, &app, "/settings", "settings").await;

    // Profile.
    browser.type_into("#settings-bio", "喜欢唐诗").await.unwrap();
    browser.type_into("#settings-max-rounds", "4").await.unwrap();
    browser.click("#settings-save").await.unwrap();
    browser.wait_for_text("#settings-status", "Saved").await.unwrap();
    let me: Value = app.get("/v1/me", &user).await.json().await.unwrap();
    assert_eq!(me["user"]["bio"], "喜欢唐诗", "{me}");
    assert_eq!(me["user"]["max_group_rounds"], 4, "{me}");

    // A key: shown once, works as a bearer token.
    browser.type_into("#api-key-name", "script").await.unwrap();
    browser.click("#api-key-create").await.unwrap();
    browser.wait_for("#api-key-secret").await.unwrap();
    let key = browser.property("#api-key-secret", "value").await.unwrap().as_str().unwrap().to_owned();
    assert!(key.len() > 20, "a key: {key:?}");
    let with_key = || app.http.get(app.url("/v1/me")).bearer_auth(&key).send();
    let answer = with_key().await.unwrap();
    assert_eq!(answer.status(), 200);
    let me: Value = answer.json().await.unwrap();
    assert_eq!(me["user"]["username"], "scripter");

    browser.refresh().await.unwrap();
    wait_for_page(&browser, "settings").await;
    let everything = browser
        .execute(
            "return [document.documentElement.outerHTML, document.body.innerText,
                ...[...document.querySelectorAll('input, textarea')].map(e => e.value),
                JSON.stringify(localStorage), JSON.stringify(sessionStorage)].join('\\n')",
            &[],
        )
        .await
        .unwrap();
    assert!(!everything.as_str().unwrap().contains(&key), "the secret is gone after a reload");
    let keys: Value = app.get("/v1/api-keys", &user).await.json().await.unwrap();
    let key_id = keys["items"][0]["id"].as_str().unwrap();
    let item = format!("[data-test=\"api-key-item\"][data-id=\"{key_id}\"][data-revoked=\"false\"]");
    assert!(browser.text(&item).await.unwrap().contains("script"), "the key is listed");
    assert_fits_the_width(&browser, "the settings page").await;
    browser.screenshot("settings-desktop").await.unwrap();

    // Revoked through the page: the key stops working.
    browser.click(&format!("{item} [data-test=\"api-key-revoke\"]")).await.unwrap();
    browser.click("#confirm-ok").await.unwrap();
    browser
        .wait_for(&format!("[data-test=\"api-key-item\"][data-id=\"{key_id}\"][data-revoked=\"true\"]"))
        .await
        .unwrap();
    assert_eq!(with_key().await.unwrap().status(), 401);

    // A new password: this browser's session stays, other sessions end, the new one logs in.
    let new_password = "moonlight over the river 42";
    browser.type_into("#password-current", PASSWORD).await.unwrap();
    browser.type_into("#password-new", new_password).await.unwrap();
    browser.type_into("#password-confirm", new_password).await.unwrap();
    browser.click("#password-save").await.unwrap();
    browser.wait_for_text("#password-status", "Password changed").await.unwrap();
    assert_eq!(page_fetch(&browser, "/v1/me", json!({})).await, 200, "the page's own session still works");
    assert_eq!(app.get("/v1/me", &user).await.status(), 401, "the other session ended");
    let old = json!({"username": "scripter", "password": PASSWORD});
    assert_eq!(app.http.post(app.url("/v1/auth/login")).json(&old).send().await.unwrap().status(), 401);
    browser.click("#logout").await.unwrap();
    wait_for_page(&browser, "login").await;
    browser.type_into("#login-username", "scripter").await.unwrap();
    browser.type_into("#login-password", new_password).await.unwrap();
    browser.click("#login-submit").await.unwrap();
    wait_for_page(&browser, "characters").await;
    assert!(browser.text("#current-user").await.unwrap().contains("scripter"));
    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

/// One request that went through the forwarding proxy, and the app's answer.
#[derive(Clone, Debug)]
struct Forwarded {
    method: String,
    path: String,
    /// Whether it carried the session cookie.
    cookie: bool,
    fetch_site: Option<String>,
    status: u16,
    body: String,
}

#[derive(Clone)]
struct Forwarder {
    app: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Forwarded>>>,
}

/// Forwards a request to the app as it came (method, path, headers, body) and records it.
async fn forward(State(to): State<Forwarder>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let cookie = parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).any(|cookies| {
        cookies.split(';').any(|pair| pair.trim().strip_prefix("fastnpc_session=").is_some_and(|v| !v.is_empty()))
    });
    let fetch_site = parts.headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut upstream = to.http.request(parts.method.clone(), format!("{}{path}", to.app)).body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream.send().await.unwrap();
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap();
    to.seen.lock().unwrap().push(Forwarded {
        method: parts.method.to_string(),
        path,
        cookie,
        fetch_site,
        status: status.as_u16(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    });
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(bytes)).unwrap()
}

/// Serves `router` on a free port of 127.0.0.1 until the task is aborted.
async fn serve(router: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, task)
}

#[tokio::test]
async fn another_origin_of_the_same_site_gets_the_cookie_sent_and_is_refused_by_the_app() {
    let app = TestApp::spawn().await;
    let user = app.user("victim").await;
    let browser = signed_in(&app, &user).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let http = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let forwarder = Forwarder { app: app.api_url.clone(), http, seen: Arc::clone(&seen) };
    let (proxy, proxy_task) = serve(Router::new().fallback(forward).with_state(forwarder)).await;
    let attacker_page = Html("<!doctype html><title>Win a prize</title><p>Congratulations!</p>");
    let (attacker, attacker_task) = serve(Router::new().route("/", get(move || async move { attacker_page }))).await;
    let proxy_url = format!("http://{proxy}");
    let posts = |seen: &Mutex<Vec<Forwarded>>| -> Vec<Forwarded> {
        seen.lock().unwrap().iter().filter(|f| f.method == "POST").cloned().collect()
    };

    // From the attacker's page (same site: 127.0.0.1, another port), two forged requests.
    browser.goto(&format!("http://{attacker}/")).await.unwrap();
    browser.wait_for_text("p", "Congratulations").await.unwrap();
    let forged = json!({"name": "伪造", "source": {"kind": "text", "text": sample_source("伪造")}}).to_string();
    let no_cors = json!({"method": "POST", "credentials": "include", "mode": "no-cors"});
    assert_eq!(page_fetch(&browser, &format!("{proxy_url}/v1/auth/logout-everywhere"), no_cors).await, 0);
    let no_cors = json!({"method": "POST", "credentials": "include", "mode": "no-cors",
        "headers": {"Content-Type": "text/plain"}, "body": forged});
    assert_eq!(page_fetch(&browser, &format!("{proxy_url}/v1/characters"), no_cors).await, 0);
    let refused = posts(&seen);
    let paths: Vec<&str> = refused.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/v1/auth/logout-everywhere", "/v1/characters"], "{refused:?}");
    for request in &refused {
        assert!(request.cookie, "the browser sent the session cookie: {request:?}");
        assert_eq!(request.fetch_site.as_deref(), Some("same-site"), "{request:?}");
        assert_eq!(request.status, 403, "{request:?}");
        assert!(request.body.contains("cross-site-request"), "refused by the CSRF check: {request:?}");
    }

    // The session is intact and nothing was created.
    open(&browser, &app, "/", "characters").await;
    assert_eq!(page_fetch(&browser, "/v1/me", json!({})).await, 200);
    let characters: Value = app.get("/v1/characters", &user).await.json().await.unwrap();
    assert_eq!(characters["items"], json!([]), "nothing was created");

    // The control: the app's own page through the proxy (same origin there) may post.
    browser.goto(&format!("{proxy_url}/")).await.unwrap();
    wait_for_page(&browser, "characters").await;
    let same_origin = json!({"method": "POST", "credentials": "include",
        "headers": {"Content-Type": "application/json"},
        "body": json!({"name": "真的", "source": {"kind": "text", "text": sample_source("真的")}}).to_string()});
    assert_eq!(page_fetch(&browser, "/v1/characters", same_origin).await, 202);
    let accepted = posts(&seen).pop().unwrap();
    assert!(accepted.cookie && accepted.path == "/v1/characters", "{accepted:?}");
    assert_eq!(accepted.fetch_site.as_deref(), Some("same-origin"), "{accepted:?}");
    let characters: Value = app.get("/v1/characters", &user).await.json().await.unwrap();
    let names: Vec<&str> =
        characters["items"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["真的"]);
    browser.assert_no_console_errors().await.unwrap();
    proxy_task.abort();
    attacker_task.abort();
    browser.close().await.unwrap();
    app.stop().await;
}

/// The API reference at `/docs`: Swagger UI, served from the binary under its own content
/// policy, lists every described operation (no console error: nothing the policy refused), and
/// "Try it out" calls the API from the page.
#[tokio::test]
async fn the_api_reference_lists_every_operation_and_tries_one_out() {
    let app = TestApp::spawn().await;
    let doc: Value = app.http.get(app.url("/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let operations = crate::openapi::operations(&doc).len();
    let browser = Browser::start().await.unwrap();
    browser.goto(&app.url("/docs/")).await.unwrap();
    browser
        .wait_until(
            "every operation is listed",
            &format!("document.querySelectorAll('.opblock').length === {operations}"),
        )
        .await
        .unwrap();

    // GET /v1/system needs no credentials: open it, try it out, execute, read the live answer.
    let system = "#operations-system-get_system";
    browser.click(&format!("{system} .opblock-summary-control")).await.unwrap();
    browser.click(&format!("{system} .try-out__btn")).await.unwrap();
    browser.click(&format!("{system} .execute")).await.unwrap();
    browser.wait_for_text(&format!("{system} .live-responses-table .response-col_status"), "200").await.unwrap();
    let body = browser.text(&format!("{system} .live-responses-table .response-col_description pre")).await.unwrap();
    assert!(body.contains("simulated") && body.contains("name_chars"), "the live answer: {body}");
    browser.assert_no_console_errors().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}
