//! The embedded mode as users run it: the `fastnpc` binary as a child process, with every
//! service URL pointing at a closed port, killed and restarted mid-job.

use std::{path::PathBuf, time::Duration};

use fastnpc_tests::{
    harness::{ChildWorker, HANG_GUARD, PASSWORD, sample_source},
    sim::{LlmSimulator, SimConfig},
    sse_client::{self, SseEvent},
};
use futures::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_fastnpc-embedded");
/// Nothing listens here.
const CLOSED: &str = "127.0.0.1:9";

/// One `fastnpc serve` process.
struct Process {
    child: ChildWorker,
    url: String,
}

/// Starts `fastnpc serve` over `data_dir`, with `llm` as its model (`None`: none configured),
/// and waits until it answers.
async fn start(data_dir: &PathBuf, llm: Option<&LlmSimulator>) -> Process {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = std::process::Command::new(BINARY);
    command
        .arg("serve")
        .env("FASTNPC_DATA_DIR", data_dir)
        .env("FASTNPC_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", format!("postgres://nobody@{CLOSED}/none"))
        .env("FASTNPC_AMQP_URL", format!("amqp://guest:guest@{CLOSED}/%2f"))
        .env("FASTNPC_REDIS_URL", format!("redis://{CLOSED}"))
        .env_remove("OPENROUTER_API_KEY")
        .env_remove("FASTNPC_LLM_MODEL")
        .stdin(std::process::Stdio::null());
    match llm {
        Some(sim) => command.env("FASTNPC_LLM_BASE_URL", sim.base_url()).env("FASTNPC_LLM_API_KEY", "test-key"),
        None => command.env_remove("FASTNPC_LLM_BASE_URL").env_remove("FASTNPC_LLM_API_KEY"),
    };
    if std::env::var_os("TEST_LOG").is_none() {
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    }
    let child = ChildWorker(command.spawn().expect("the fastnpc binary starts"));
    let url = format!("http://127.0.0.1:{port}");
    let ready = async {
        while !Client::new().get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, ready).await.expect("fastnpc serve answers");
    Process { child, url }
}

fn data_dir() -> PathBuf {
    std::env::temp_dir().join(format!("fastnpc-embedded-{}", uuid::Uuid::now_v7().simple()))
}

async fn call(method: reqwest::Method, url: String, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the request is answered");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn login(process: &Process, register: bool) -> String {
    let credentials = json!({"username": "ada", "password": PASSWORD});
    if register {
        let (status, body) =
            call(reqwest::Method::POST, format!("{}/v1/auth/register", process.url), None, Some(credentials.clone()))
                .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) =
        call(reqwest::Method::POST, format!("{}/v1/auth/login", process.url), None, Some(credentials)).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

async fn wait_for_job(process: &Process, token: &str, job: &str) -> Value {
    let poll = async {
        loop {
            let (_, body) =
                call(reqwest::Method::GET, format!("{}/v1/jobs/{job}", process.url), Some(token), None).await;
            if matches!(body["job"]["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return body["job"].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, poll).await.expect("the job finishes")
}

async fn events(
    process: &Process,
    token: &str,
    job: &str,
    after: Option<u64>,
) -> impl futures::Stream<Item = anyhow::Result<SseEvent>> + Unpin + use<> {
    let mut request = Client::new().get(format!("{}/v1/jobs/{job}/events", process.url)).bearer_auth(token);
    if let Some(after) = after {
        request = request.header("Last-Event-ID", after.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    sse_client::events(response)
}

async fn create_character(process: &Process, token: &str) -> (String, String) {
    let body = json!({"name": "诸葛亮", "source": {"kind": "text", "text": sample_source("诸葛亮")}});
    let (status, created) =
        call(reqwest::Method::POST, format!("{}/v1/characters", process.url), Some(token), Some(body)).await;
    assert_eq!(status, 202, "{created}");
    (created["character"]["id"].as_str().unwrap().to_owned(), created["job"]["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn fastnpc_serve_needs_none_of_the_services() {
    let dir = data_dir();
    // No LLM configured either: the built-in simulator answers.
    let process = start(&dir, None).await;
    let token = login(&process, true).await;
    let (character, job) = create_character(&process, &token).await;
    assert_eq!(wait_for_job(&process, &token, &job).await["status"], "succeeded");
    let (_, ready) =
        call(reqwest::Method::GET, format!("{}/v1/characters/{character}", process.url), Some(&token), None).await;
    assert_eq!(ready["character"]["status"], "ready", "{ready}");

    let reply = Client::new()
        .post(format!("{}/v1/characters/{character}/messages", process.url))
        .bearer_auth(&token)
        .header("Prefer", "wait=30")
        .json(&json!({"content": "先生，天下大势如何？"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let reply: Value = reply.json().await.unwrap();
    assert!(!reply["reply"]["content"].as_str().unwrap().is_empty(), "{reply}");
    let (_, history) =
        call(reqwest::Method::GET, format!("{}/v1/characters/{character}/messages", process.url), Some(&token), None)
            .await;
    assert_eq!(history["items"].as_array().unwrap().len(), 2, "the message and its reply: {history}");

    // A second process over the same data would take over this one's jobs: it refuses to run.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let second = std::process::Command::new(BINARY)
        .arg("serve")
        .env("FASTNPC_DATA_DIR", &dir)
        .env("FASTNPC_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(!ChildWorker(second).wait().await, "a second fastnpc serve over one data directory exits with an error");

    process.child.signal("TERM");
    assert!(process.child.wait().await, "a clean exit on SIGTERM");
    let _ = tokio::fs::remove_dir_all(&dir).await;
}

/// Runs the `fastnpc` binary with `args` over `data_dir` until it exits (hang-guarded): whether
/// it succeeded, and what it wrote to stderr.
async fn run(data_dir: &PathBuf, args: &[&str]) -> (bool, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = std::process::Command::new(BINARY);
    command
        .args(args)
        .env("FASTNPC_DATA_DIR", data_dir)
        .env("FASTNPC_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", format!("postgres://nobody@{CLOSED}/none"))
        .env_remove("FASTNPC_LLM_BASE_URL")
        .env_remove("FASTNPC_LLM_API_KEY")
        .env_remove("OPENROUTER_API_KEY")
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(HANG_GUARD, tokio::task::spawn_blocking(move || command.output()))
        .await
        .expect("fastnpc exits")
        .unwrap()
        .expect("the fastnpc binary starts");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn a_locked_data_directory_is_refused_before_anything_in_it_is_touched() {
    // A directory with a user in it, `fastnpc serve` stopped: export works.
    let used = data_dir();
    let process = start(&used, None).await;
    login(&process, true).await;
    process.child.signal("TERM");
    assert!(process.child.wait().await, "a clean exit on SIGTERM");
    let exported = used.join("ada.json");
    let (ok, stderr) = run(&used, &["export", "ada", exported.to_str().unwrap()]).await;
    assert!(ok, "{stderr}");

    // Another process holds the lock (this test, as a running `fastnpc serve` would).
    let hold = |dir: &PathBuf| {
        std::fs::create_dir_all(dir).unwrap();
        let lock = std::fs::File::create(dir.join("fastnpc.lock")).unwrap();
        lock.try_lock().expect("the lock is free");
        lock
    };
    let refused = |stderr: &str, dir: &PathBuf| {
        assert!(stderr.contains("another fastnpc process"), "{stderr}");
        assert!(stderr.contains(&dir.display().to_string()), "the error names the directory: {stderr}");
    };
    let held = hold(&used);
    let again = used.join("again.json");
    let (ok, stderr) = run(&used, &["export", "ada", again.to_str().unwrap()]).await;
    assert!(!ok, "export is refused while the directory is locked");
    refused(&stderr, &used);
    assert!(!again.exists(), "nothing was exported");
    drop(held);

    // A fresh directory, locked: neither serve nor an import creates (let alone migrates) the
    // database before refusing.
    let fresh = data_dir();
    let held = hold(&fresh);
    let (ok, stderr) = run(&fresh, &["serve"]).await;
    assert!(!ok, "a second fastnpc serve exits with an error");
    refused(&stderr, &fresh);
    assert!(!fresh.join(fastnpc::DATABASE_FILE).exists(), "serve touched no database before refusing");
    let (ok, stderr) = run(&fresh, &["import", exported.to_str().unwrap(), "--into", "embedded"]).await;
    assert!(!ok, "import is refused while the directory is locked");
    refused(&stderr, &fresh);
    assert!(!fresh.join(fastnpc::DATABASE_FILE).exists(), "import touched no database before refusing");

    // Once the lock is free, the same import goes through.
    drop(held);
    let (ok, stderr) = run(&fresh, &["import", exported.to_str().unwrap(), "--into", "embedded"]).await;
    assert!(ok, "{stderr}");
    for dir in [used, fresh] {
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
}

#[tokio::test]
async fn a_job_interrupted_by_a_crash_resumes_after_a_restart_and_loses_nothing() {
    let dir = data_dir();
    // Answers that would take a minute: the job is mid-flight when the process dies.
    let sim = LlmSimulator::start(SimConfig { time_to_first_token: Duration::from_secs(60), ..SimConfig::default() })
        .await
        .unwrap();
    let first = start(&dir, Some(&sim)).await;
    let token = login(&first, true).await;
    let (character, job) = create_character(&first, &token).await;
    let mut stream = events(&first, &token, &job, None).await;
    let mut seen = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        let running = event.event == "status" && event.data["status"] == "running";
        seen.push(event);
        if running {
            break;
        }
    }
    let until_in_flight = async {
        while sim.stats().in_flight < 10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, until_in_flight).await.expect("the generation's calls are in flight");
    first.child.signal("KILL");
    assert!(!first.child.wait().await, "killed, not exited");
    drop(stream);

    sim.set_config(SimConfig::default());
    let second = start(&dir, Some(&sim)).await;
    // The session survived with the database; the stream resumes where the client left it.
    let last = seen.last().unwrap().id.unwrap();
    let rest: Vec<SseEvent> = events(&second, &token, &job, Some(last)).await.map(|e| e.unwrap()).collect().await;
    let ids: Vec<u64> = rest.iter().map(|e| e.id.unwrap()).collect();
    let expected: Vec<u64> = (last + 1..=last + ids.len() as u64).collect();
    assert_eq!(ids, expected, "no gap, no duplicate after the restart");
    assert_eq!(rest.last().unwrap().event, "succeeded", "{rest:?}");
    assert_eq!(rest.iter().filter(|e| e.event == "succeeded").count(), 1, "one terminal event: {rest:?}");
    assert!(seen.iter().all(|e| e.event != "succeeded"), "none before the crash");
    let finished = wait_for_job(&second, &token, &job).await;
    assert!(finished["attempts"].as_i64().unwrap() >= 2, "taken over after the restart: {finished}");
    let (_, ready) =
        call(reqwest::Method::GET, format!("{}/v1/characters/{character}", second.url), Some(&token), None).await;
    assert_eq!(ready["character"]["status"], "ready");
    assert!(ready["character"]["profile"].is_object());

    // A chat reply in flight across a crash is stored exactly once.
    sim.set_config(SimConfig { time_to_first_token: Duration::from_secs(60), ..SimConfig::default() });
    let (status, sent) = call(
        reqwest::Method::POST,
        format!("{}/v1/characters/{character}/messages", second.url),
        Some(&token),
        Some(json!({"content": "丞相安好？"})),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let reply_job = sent["job"]["id"].as_str().unwrap().to_owned();
    let before = sim.stats().requests_received;
    let until_asked = async {
        while sim.stats().requests_received == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, until_asked).await.expect("the reply is being generated");
    second.child.signal("KILL");
    assert!(!second.child.wait().await);
    sim.set_config(SimConfig::default());
    let third = start(&dir, Some(&sim)).await;
    assert_eq!(wait_for_job(&third, &token, &reply_job).await["status"], "succeeded");
    let (_, history) =
        call(reqwest::Method::GET, format!("{}/v1/characters/{character}/messages", third.url), Some(&token), None)
            .await;
    let authors: Vec<&str> =
        history["items"].as_array().unwrap().iter().map(|m| m["author"].as_str().unwrap()).collect();
    assert_eq!(authors, ["character", "user"], "one reply to the one message: {history}");

    third.child.signal("TERM");
    assert!(third.child.wait().await);
    let _ = tokio::fs::remove_dir_all(&dir).await;
}

/// What a user sees of their data through the API, to compare two stores by.
async fn views(app: &fastnpc_tests::harness::TestApp, user: &fastnpc_tests::harness::TestUser) -> Vec<Value> {
    let mut views = Vec::new();
    let characters: Value = app.get("/v1/characters", user).await.json().await.unwrap();
    let groups: Value = app.get("/v1/groups", user).await.json().await.unwrap();
    for character in characters["items"].as_array().unwrap() {
        let id = character["id"].as_str().unwrap();
        let mut view: Value = app.get(&format!("/v1/characters/{id}"), user).await.json().await.unwrap();
        // Its generation job is job history, which a move does not carry.
        view.as_object_mut().unwrap().remove("job");
        views.push(view);
        for path in [
            format!("/v1/characters/{id}/messages?include=prompt"),
            format!("/v1/characters/{id}/memories"),
            format!("/v1/characters/{id}/versions"),
            format!("/v1/characters/{id}/card?spec=v3"),
        ] {
            views.push(app.get(&path, user).await.json().await.unwrap());
        }
        // Its picture, byte for byte (or its absence).
        let avatar = app.get(&format!("/v1/characters/{id}/avatar"), user).await;
        views.push(json!({"status": avatar.status().as_u16(), "bytes": avatar.bytes().await.unwrap().to_vec()}));
    }
    for group in groups["items"].as_array().unwrap() {
        let id = group["id"].as_str().unwrap();
        views.push(app.get(&format!("/v1/groups/{id}"), user).await.json().await.unwrap());
        views.push(app.get(&format!("/v1/groups/{id}/messages"), user).await.json().await.unwrap());
    }
    let me: Value = app.get("/v1/me", user).await.json().await.unwrap();
    let usage: Value = app.get("/v1/me/usage?days=366", user).await.json().await.unwrap();
    assert!(usage["total"]["calls"].as_u64().unwrap() > 0, "the LLM spend is on record: {usage}");
    views.extend([characters, groups, me, usage, app.get("/v1/api-keys", user).await.json().await.unwrap()]);
    views
}

#[tokio::test]
async fn a_user_moves_from_the_embedded_store_to_postgres_with_everything_they_own() {
    use fastnpc_tests::harness::{Backend, TestApp};

    let embedded =
        TestApp::builder().backend(Backend::Embedded).setting("FASTNPC_GROUP_TURN_PAUSE_MS", "0").spawn().await;
    let ada = embedded.user("ada").await;
    let zhuge = embedded.ready_character(&ada, "诸葛亮").await;
    let liu = embedded.ready_character(&ada, "刘备").await;
    assert_eq!(embedded.send_message(&ada, &zhuge, "先生安好？", Some(30)).await.status(), 200);
    let memories =
        json!({"short_term": ["主公 | 三顾 | 茅庐"], "long_term": [{"content": "隆中对", "importance": 12}]});
    let edited = embedded.request(reqwest::Method::PUT, &format!("/v1/characters/{zhuge}/memories"), Some(&ada));
    assert_eq!(edited.json(&memories).send().await.unwrap().status(), 200);
    let group: Value = embedded
        .post_json("/v1/groups", &ada, &json!({"name": "桃园", "character_ids": [zhuge, liu]}))
        .await
        .json()
        .await
        .unwrap();
    let group = group["group"]["id"].as_str().unwrap().to_owned();
    let turn: Value = embedded
        .post_json(&format!("/v1/groups/{group}/messages"), &ada, &json!({"content": "议事"}))
        .await
        .json()
        .await
        .unwrap();
    embedded.wait_for_job(&ada, turn["job"]["id"].as_str().unwrap()).await;
    let key: Value = embedded.post_json("/v1/api-keys", &ada, &json!({"name": "script"})).await.json().await.unwrap();
    let key =
        fastnpc_tests::harness::TestUser { username: "ada".into(), token: key["key"].as_str().unwrap().to_owned() };
    for kind in ["compress_memory", "compress_group_memory", "group_turn", "chat_reply"] {
        embedded.wait_until_no_pending(kind).await;
    }
    // An edit (a second version), pictures of a character and of the user, and a character
    // imported from a card (which keeps the card).
    let edit = embedded
        .request(reqwest::Method::PATCH, &format!("/v1/characters/{zhuge}"), Some(&ada))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"brief": "卧龙先生"}).to_string());
    assert_eq!(edit.send().await.unwrap().status(), 200);
    let picture = image::DynamicImage::ImageRgb8(image::ImageBuffer::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 77])
    }));
    let mut png = Vec::new();
    picture.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    for path in [format!("/v1/characters/{zhuge}/avatar"), "/v1/me/avatar".to_owned()] {
        let put = embedded.request(reqwest::Method::PUT, &path, Some(&ada)).header("content-type", "image/png");
        assert_eq!(put.body(png.clone()).send().await.unwrap().status(), 200, "{path}");
    }
    let card = include_bytes!("../fixtures/cards/sillytavern-seraphina.png").to_vec();
    let imported = embedded.request(reqwest::Method::POST, "/v1/characters/import", Some(&ada));
    assert_eq!(imported.header("content-type", "image/png").body(card).send().await.unwrap().status(), 201);
    let my_picture = embedded.get("/v1/me/avatar", &ada).await.bytes().await.unwrap();
    // A setting that is not the default, so the move is seen to carry it.
    let english = embedded.request(reqwest::Method::PATCH, "/v1/me", Some(&ada));
    assert_eq!(english.json(&json!({"language": "en"})).send().await.unwrap().status(), 200);
    let before = views(&embedded, &ada).await;
    // Export takes the data directory's lock: refused while the system runs, fine once stopped.
    let settings = embedded.settings.clone();
    let refused = fastnpc::export_user(&settings, "ada").await.expect_err("refused while serving").to_string();
    assert!(refused.contains(&settings.data_dir.display().to_string()), "{refused}");
    embedded.stop_keeping_data().await;
    let document = fastnpc::export_user(&settings, "ada").await.expect("exported");
    let _ = tokio::fs::remove_dir_all(&settings.data_dir).await;
    assert_eq!(document.user.language, "en");
    assert_eq!(document.characters.len(), 3);
    assert!(document.character_versions.iter().any(|v| v.change == "edited"), "the history goes along");
    assert_eq!((document.avatars.len(), document.character_cards.len()), (3, 1), "pictures and the card too");
    assert!(document.messages.len() >= 2 && !document.group_messages.is_empty(), "{document:?}");

    let distributed = TestApp::builder().backend(Backend::Distributed).spawn().await;
    fastnpc::import_user(&distributed.settings, &document, fastnpc::Target::Postgres).await.expect("imported");
    // Row for row: exporting from Postgres gives the document back.
    let round_trip = distributed.store.export_user("ada").await.unwrap().expect("exportable");
    for (section, there, here) in [
        ("characters", json!(round_trip.characters), json!(document.characters)),
        ("versions", json!(round_trip.character_versions), json!(document.character_versions)),
        ("cards", json!(round_trip.character_cards), json!(document.character_cards)),
        ("avatars", json!(round_trip.avatars), json!(document.avatars)),
    ] {
        assert!(there == here, "{section} differ after the move");
    }
    assert_eq!(round_trip, document, "every exported row arrived as it was");
    // The password works on the new store; the sessions were not carried over.
    assert_eq!(distributed.get("/v1/me", &ada).await.status(), 401);
    let ada = distributed.login("ada", PASSWORD).await;
    let after = views(&distributed, &ada).await;
    assert_eq!(after.len(), before.len());
    for (after, before) in after.iter().zip(&before) {
        assert_eq!(after, before, "the same data through the same API");
    }
    assert_eq!(distributed.get("/v1/me", &key).await.status(), 200, "the API key too");
    let moved_picture = distributed.get("/v1/me/avatar", &ada).await.bytes().await.unwrap();
    assert_eq!(moved_picture, my_picture, "and the user's picture");
    // And the conversation goes on there.
    assert_eq!(distributed.send_message(&ada, &zhuge, "再议北伐。", Some(30)).await.status(), 200);

    let characters = distributed.db.count("select count(*) from characters").await;
    let again = fastnpc::import_user(&distributed.settings, &document, fastnpc::Target::Postgres).await;
    let refusal = again.expect_err("a second import is refused").to_string();
    assert!(refusal.contains("already"), "{refusal}");
    assert_eq!(distributed.db.count("select count(*) from characters").await, characters, "and writes nothing");
    distributed.stop().await;
}
