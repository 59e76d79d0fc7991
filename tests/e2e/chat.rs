//! Chatting with a character: streamed replies, inline replies, history, ordering, failures.

use std::time::Duration;

use fastnpc_tests::{
    harness::{TestApp, succeeded_stream_text},
    sim::{Fault, Rule, SimConfig},
    sse_client::SseEvent,
};
use futures::StreamExt as _;
use reqwest::Method;
use serde_json::Value;

fn chat_sim() -> SimConfig {
    SimConfig { reply_tokens: 40, time_to_first_token: Duration::from_millis(50), ..SimConfig::default() }
}

#[tokio::test]
async fn a_reply_streams_as_tokens_that_add_up_to_the_stored_message() {
    let app = TestApp::builder().sim(chat_sim()).spawn().await;
    let user = app.user("ada").await;
    let character = app.ready_character(&user, "诸葛亮").await;

    let response = app.send_message(&user, &character, "先生以为天下大势如何？", None).await;
    assert_eq!(response.status(), 202);
    let sent: Value = response.json().await.unwrap();
    assert_eq!(sent["message"]["author"], "user");
    let job_id = sent["job"]["id"].as_str().unwrap();

    let events = app.collect_events(&user, job_id, None).await;
    let last_reset = events.iter().rposition(|e| e.event == "reset").map_or(0, |i| i + 1);
    let tokens: Vec<&str> =
        events[last_reset..].iter().filter(|e| e.event == "token").map(|e| e.data["text"].as_str().unwrap()).collect();
    let streamed: String = tokens.concat();
    let last = events.last().unwrap();
    assert_eq!(last.event, "succeeded");
    assert_eq!(streamed, last.data["result"]["message"]["content"].as_str().unwrap());
    assert!(tokens.len() > 1, "the reply streamed in pieces");
    assert!(tokens.len() < 40, "tokens were coalesced ({} events for 40 model tokens)", tokens.len());

    let history: Value = app.get(&format!("/v1/characters/{character}/messages"), &user).await.json().await.unwrap();
    let newest = &history["items"][0];
    assert_eq!(newest["author"], "character");
    assert_eq!(newest["content"], streamed.as_str());
    assert_eq!(newest["job_id"], job_id);
    assert_eq!(history["items"][1]["content"], "先生以为天下大势如何？");
    assert_eq!(history["items"][1], sent["message"], "the 202 showed the message as it was stored");

    // The prompt: six parts, the message as the user turn only (not also in the transcript).
    let request = app.sim.requests().into_iter().rfind(|r| r.stream).expect("a streamed chat request");
    let system = request.body["messages"][0]["content"].as_str().unwrap();
    for part in ["①", "②", "③", "④", "⑤", "⑥"] {
        assert!(system.contains(part), "system prompt lacks part {part}");
    }
    assert!(!system.contains("先生以为天下大势如何？"), "the current message is not repeated in the transcript");
    assert_eq!(request.body["messages"][1]["content"], "先生以为天下大势如何？");
    app.stop().await;
}

#[tokio::test]
async fn a_message_sent_accepting_an_event_stream_is_answered_with_its_replys_events() {
    let app = TestApp::builder().sim(chat_sim()).spawn().await;
    let user = app.user("ada").await;
    let character = app.ready_character(&user, "诸葛亮").await;
    let path = format!("/v1/characters/{character}/messages");
    let send = |content: &'static str, key: &'static str| {
        app.request(Method::POST, &path, Some(&user))
            .header("Accept", "text/event-stream")
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({ "content": content }))
            .send()
    };
    let collect = |response: reqwest::Response| async {
        let events = fastnpc_tests::sse_client::events(response).map(|e| e.expect("a well-formed event")).collect();
        tokio::time::timeout(Duration::from_secs(30), events).await.expect("the stream ends with the job")
    };

    let response = send("先生以为天下大势如何？", "first").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let job_id = location.strip_prefix("/v1/jobs/").expect("Location names the job").to_owned();
    let message_id = response.headers()["fastnpc-message-id"].to_str().unwrap().to_owned();
    let events: Vec<SseEvent> = collect(response).await;

    // The whole log, from `queued` on, ids and all: the stream a `GET …/events` gives.
    let text = succeeded_stream_text(&events);
    assert_eq!((events[0].event.as_str(), &events[0].data["status"]), ("status", &Value::from("queued")));
    assert!(events.iter().filter(|e| e.event == "token").count() > 1, "the reply streamed in pieces");
    assert_eq!(app.collect_events(&user, &job_id, None).await, events);
    let history: Value = app.get(&format!("{path}?limit=2"), &user).await.json().await.unwrap();
    assert_eq!(history["items"][0]["content"], text.as_str(), "the streamed text is the stored reply");
    assert_eq!(history["items"][0]["job_id"], job_id.as_str());
    assert_eq!(history["items"][1]["id"], message_id.as_str(), "the header names the stored message");
    assert_eq!(history["items"][1]["content"], "先生以为天下大势如何？");

    // A repeat streams the original job again from its first event and stores nothing.
    let repeated = send("先生以为天下大势如何？", "first").await.unwrap();
    assert_eq!(repeated.headers()["location"], location.as_str());
    assert_eq!(repeated.headers()["fastnpc-message-id"], message_id.as_str());
    assert_eq!(collect(repeated).await, events);
    assert_eq!(app.db.count("select count(*) from messages").await, 2, "one message and one reply");

    // A client that hangs up mid-reply resumes on the job's own stream after the last id it saw.
    let response = send("再说说荆州", "second").await.unwrap();
    let job_id = response.headers()["location"].to_str().unwrap().trim_start_matches("/v1/jobs/").to_owned();
    let mut stream = fastnpc_tests::sse_client::events(response);
    let mut seen = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        let is_token = event.event == "token";
        seen.push(event);
        if is_token {
            break;
        }
    }
    drop(stream);
    let rest = app.collect_events(&user, &job_id, seen.last().and_then(|e| e.id)).await;
    let whole: Vec<SseEvent> = seen.into_iter().chain(rest).collect();
    assert_eq!(whole, app.collect_events(&user, &job_id, None).await, "nothing lost or repeated");
    succeeded_stream_text(&whole);

    // Refusals are problem documents as ever, not streams; `q=0` and JSON keep the 202.
    let other = app.user("grace").await;
    let post = |user, accept: &'static str, content: &'static str| {
        let request = app.request(Method::POST, &path, Some(user)).header("Accept", accept);
        async move { request.json(&serde_json::json!({ "content": content })).send().await.unwrap() }
    };
    let response = post(&other, "text/event-stream", "你是谁？").await;
    assert_eq!(response.status(), 404, "another user's character");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let response = post(&user, "text/event-stream", "  ").await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let response = post(&user, "text/event-stream;q=0, application/json", "那么东吴呢？").await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    app.wait_for_job(&user, body["job"]["id"].as_str().unwrap()).await;
    app.stop().await;
}

#[tokio::test]
async fn prefer_wait_returns_the_reply_inline() {
    let app = TestApp::builder().sim(chat_sim()).spawn().await;
    let user = app.user("grace").await;
    let character = app.ready_character(&user, "李白").await;

    let response = app.send_message(&user, &character, "请作诗一首", Some(20)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["preference-applied"], "wait=20");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["job"]["status"], "succeeded");
    assert_eq!(body["reply"]["author"], "character");
    let history: Value =
        app.get(&format!("/v1/characters/{character}/messages?limit=1"), &user).await.json().await.unwrap();
    assert_eq!(history["items"][0]["content"], body["reply"]["content"]);
    assert_eq!(history["items"][0]["id"], body["reply"]["id"]);

    // Too short a wait for a slow model: 202 as usual, and the reply still arrives.
    app.sim.set_config(SimConfig { time_to_first_token: Duration::from_secs(3), ..chat_sim() });
    let response = app.send_message(&user, &character, "再来一首", Some(1)).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let job = app.wait_for_job(&user, body["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded");
    app.stop().await;
}

#[tokio::test]
async fn the_request_timeout_does_not_cut_a_prefer_wait() {
    let app = TestApp::builder().sim(chat_sim()).setting("FASTNPC_HTTP_REQUEST_TIMEOUT_SECS", "1").spawn().await;
    // Not `app.user`: an argon2 hash can take longer than the 1 s timeout in a loaded debug build.
    let user = app.seeded_user("grace").await;
    let character = app.ready_character(&user, "李白").await;

    // The reply takes 3 s to start, three times the request timeout; the wait allows 5.
    app.sim.set_config(SimConfig { time_to_first_token: Duration::from_secs(3), ..chat_sim() });
    let started = std::time::Instant::now();
    let response = app.send_message(&user, &character, "请作诗一首", Some(5)).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200, "answered with the reply, not cut at 1 s");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reply"]["author"], "character", "{body}");
    assert!(elapsed > Duration::from_secs(1), "the answer came after the timeout: {elapsed:?}");
    app.stop().await;
}

#[tokio::test]
async fn history_pages_newest_first_with_stable_cursors() {
    let app = TestApp::builder().sim(chat_sim()).spawn().await;
    let user = app.user("hedy").await;
    let character = app.ready_character(&user, "王维").await;
    for i in 1..=3 {
        assert_eq!(app.send_message(&user, &character, &format!("第{i}问"), Some(20)).await.status(), 200);
    }
    let path = format!("/v1/characters/{character}/messages");
    let page: Value = app.get(&format!("{path}?limit=4"), &user).await.json().await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    let authors: Vec<&str> = items.iter().map(|m| m["author"].as_str().unwrap()).collect();
    assert_eq!(authors, ["character", "user", "character", "user"]);
    assert_eq!(items[1]["content"], "第3问");
    assert_eq!(items[3]["content"], "第2问");
    let ids: Vec<&str> = items.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert!(items.iter().all(|m| m.get("prompt").is_none()), "no prompt unless asked");

    // A new message does not shift the older page.
    let cursor = page["next_before"].as_str().unwrap();
    assert_eq!(app.send_message(&user, &character, "第4问", Some(20)).await.status(), 200);
    let older: Value = app.get(&format!("{path}?limit=4&before={cursor}"), &user).await.json().await.unwrap();
    let older = older["items"].as_array().unwrap();
    assert_eq!(older.len(), 2);
    assert_eq!(older[0]["author"], "character");
    assert_eq!(older[1]["content"], "第1问");

    let with_prompt: Value = app.get(&format!("{path}?limit=2&include=prompt"), &user).await.json().await.unwrap();
    assert!(with_prompt["items"][0]["prompt"].as_str().is_some_and(|p| p.contains("⑥")), "replies carry their prompt");
    assert!(with_prompt["items"][1].get("prompt").is_none(), "user messages have none");
    assert_eq!(app.get(&format!("{path}?include=everything"), &user).await.status(), 422);
    app.stop().await;
}

/// Replies that start together are claimed, and their prompts read, in shared rounds (in
/// Postgres one statement claims a round and reads each reply's context): every reply must still
/// be written from its own character's context, answering its own message.
#[tokio::test]
async fn replies_started_together_are_each_written_from_their_own_characters_context() {
    const POETS: [&str; 12] =
        ["李白", "杜甫", "王维", "白居易", "孟浩然", "王昌龄", "李商隐", "杜牧", "韩愈", "柳宗元", "刘禹锡", "岑参"];
    let app = TestApp::builder().workers(1).sim(chat_sim()).spawn().await;
    let user = app.user("ada").await;
    let mut characters = Vec::new();
    for poet in POETS {
        characters.push(app.imported_character(&user, poet).await);
    }
    let sends = POETS.iter().zip(&characters).map(|(poet, character)| {
        let (app, user) = (&app, &user);
        async move {
            let response = app.send_message(user, character, &format!("{poet}，请赋诗一首"), Some(30)).await;
            assert_eq!(response.status(), 200, "{poet}: {}", response.text().await.unwrap_or_default());
            response.json::<Value>().await.unwrap()
        }
    });
    let answered = futures::future::join_all(sends).await;

    for ((poet, character), answer) in POETS.iter().zip(&characters).zip(&answered) {
        assert_eq!(answer["reply"]["reply_to"], answer["message"]["id"], "{poet}'s reply answers its message");
        let path = format!("/v1/characters/{character}/messages?include=prompt");
        let page: Value = app.get(&path, &user).await.json().await.unwrap();
        let reply = &page["items"][0];
        assert_eq!(reply["id"], answer["reply"]["id"]);
        let prompt = reply["prompt"].as_str().expect("the reply's prompt");
        assert!(prompt.contains(&format!("{poet}，一位唐代诗人")), "{poet}'s prompt is built from its own profile");
        let others: Vec<&&str> = POETS.iter().filter(|other| *other != poet && prompt.contains(**other)).collect();
        assert!(others.is_empty(), "{poet}'s prompt names other characters: {others:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn back_to_back_messages_are_answered_in_order_and_see_each_other() {
    // A slow model and several workers: the second job is delivered while the first runs.
    let app = TestApp::builder()
        .workers(3)
        .sim(SimConfig { time_to_first_token: Duration::from_millis(400), ..chat_sim() })
        .spawn()
        .await;
    let user = app.user("katherine").await;
    let character = app.ready_character(&user, "杜甫").await;

    let first: Value = app.send_message(&user, &character, "第一句：你好", None).await.json().await.unwrap();
    let second: Value = app.send_message(&user, &character, "第二句：再见", None).await.json().await.unwrap();
    let first_job = app.wait_for_job(&user, first["job"]["id"].as_str().unwrap()).await;
    let second_job = app.wait_for_job(&user, second["job"]["id"].as_str().unwrap()).await;
    assert_eq!((first_job["status"].as_str(), second_job["status"].as_str()), (Some("succeeded"), Some("succeeded")));
    let first_reply = first_job["result"]["message"]["content"].as_str().unwrap();
    assert!(
        first_job["finished_at"].as_str().unwrap() <= second_job["started_at"].as_str().unwrap(),
        "the second reply started after the first finished"
    );

    let second_request = app
        .sim
        .requests()
        .into_iter()
        .find(|r| r.stream && r.body["messages"][1]["content"] == "第二句：再见")
        .expect("the second reply's request");
    let system = second_request.body["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains(first_reply), "the second prompt contains the first reply");
    assert!(system.contains("第一句：你好"));

    let history: Value = app.get(&format!("/v1/characters/{character}/messages"), &user).await.json().await.unwrap();
    let contents: Vec<&str> =
        history["items"].as_array().unwrap().iter().rev().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents[0], "第一句：你好");
    assert_eq!(contents[1], "第二句：再见");
    assert_eq!(contents[2], first_reply, "replies are stored in the order the messages were sent");
    app.stop().await;
}

#[tokio::test]
async fn an_llm_failure_fails_the_job_stores_no_reply_and_can_be_retried() {
    let app = TestApp::builder().sim(chat_sim()).setting("FASTNPC_LLM_MAX_RETRIES", "1").spawn().await;
    let user = app.user("barbara").await;
    let character = app.ready_character(&user, "苏轼").await;
    app.sim.add_rule(Rule { when_contains: "会失败的问题".into(), fault: Fault::ServerError, times: None });

    let sent: Value = app.send_message(&user, &character, "会失败的问题", None).await.json().await.unwrap();
    let job_id = sent["job"]["id"].as_str().unwrap();
    let events = app.collect_events(&user, job_id, None).await;
    assert!(events.iter().all(|e| e.event != "token"), "no error text was streamed as the character's words");
    let last = events.last().unwrap();
    assert_eq!(last.event, "failed");
    assert_eq!(last.data["code"], "llm_unavailable");
    assert!(last.data["message"].as_str().unwrap().contains("500"), "{}", last.data);

    let history: Value = app.get(&format!("/v1/characters/{character}/messages"), &user).await.json().await.unwrap();
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "the user's message stays, no reply is stored");
    assert_eq!(items[0]["author"], "user");

    // The provider recovers; the client retries the job.
    app.sim.reset();
    let retried = app.request(Method::POST, &format!("/v1/jobs/{job_id}/retry"), Some(&user)).send().await.unwrap();
    assert_eq!(retried.status(), 202);
    let retried: Value = retried.json().await.unwrap();
    let job = app.wait_for_job(&user, retried["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["message_id"], sent["message"]["id"]);
    let again = app.request(Method::POST, &format!("/v1/jobs/{job_id}/retry"), Some(&user)).send().await.unwrap();
    assert_eq!(again.status(), 409, "a message with a reply is not answered twice");
    app.stop().await;
}

#[tokio::test]
async fn chat_input_is_validated() {
    let app = TestApp::spawn().await;
    let user = app.user("linus").await;
    let created = app.create_character(&user, "白居易").await;
    let character = created["character"]["id"].as_str().unwrap();
    // Not ready yet (or already ready: then the empty message below is the only refusal).
    let early = app.send_message(&user, character, "你好", None).await;
    assert!(early.status() == 409 || early.status() == 202, "{}", early.status());
    app.wait_for_job(&user, created["job"]["id"].as_str().unwrap()).await;
    assert_eq!(app.send_message(&user, character, "   ", None).await.status(), 422);
    assert_eq!(app.send_message(&user, character, &"长".repeat(8001), None).await.status(), 422);
    let unknown = app
        .request(Method::POST, &format!("/v1/characters/{character}/messages"), Some(&user))
        .json(&serde_json::json!({"content": "x", "role": "system"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 422);
    app.stop().await;
}

/// The accept checks the character in the statement that writes the message: one still
/// generating gets 409 and another user's gets 404, and neither refusal stores a message or a job.
#[tokio::test]
async fn a_message_to_a_character_not_ready_or_not_yours_is_refused_and_stores_nothing() {
    // No worker: the generation stays queued, so the character stays `generating`.
    let app = TestApp::builder().workers(0).spawn().await;
    let owner = app.user("ada").await;
    let other = app.user("eve").await;
    let created = app.create_character(&owner, "李白").await;
    let character = created["character"]["id"].as_str().unwrap();

    let early = app.send_message(&owner, character, "你好", None).await;
    assert_eq!(early.status(), 409);
    let problem: Value = early.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/character-not-ready", "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("generating"), "{problem}");
    assert_eq!(app.send_message(&other, character, "你好", None).await.status(), 404);
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(app.send_message(&owner, &unknown, "你好", None).await.status(), 404);

    let history: Value = app.get(&format!("/v1/characters/{character}/messages"), &owner).await.json().await.unwrap();
    assert_eq!(history["items"], serde_json::json!([]), "no message stored");
    for (user, expected) in [(&owner, vec!["generate_character"]), (&other, vec![])] {
        let jobs: Value = app.get("/v1/jobs", user).await.json().await.unwrap();
        let kinds: Vec<_> = jobs["items"].as_array().unwrap().iter().map(|job| job["kind"].clone()).collect();
        assert_eq!(kinds, expected, "no job but the generation");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_stream_that_breaks_midway_is_reset_and_restarted() {
    let app = TestApp::builder().sim(chat_sim()).spawn().await;
    let user = app.user("margaret").await;
    let character = app.ready_character(&user, "辛弃疾").await;
    // The reply's first stream drops after a few chunks; the second is whole.
    app.sim.add_rule(Rule { when_contains: "断线的问题".into(), fault: Fault::DropConnection, times: Some(1) });

    let sent: Value = app.send_message(&user, &character, "断线的问题", None).await.json().await.unwrap();
    let events = app.collect_events(&user, sent["job"]["id"].as_str().unwrap(), None).await;
    let reset = events.iter().position(|e| e.event == "reset").expect("a reset event voids the broken text");
    assert!(events[..reset].iter().any(|e| e.event == "token"), "text had been shown before the break");
    let after: String =
        events[reset..].iter().filter(|e| e.event == "token").map(|e| e.data["text"].as_str().unwrap()).collect();
    let last = events.last().unwrap();
    assert_eq!(last.event, "succeeded");
    assert_eq!(
        after,
        last.data["result"]["message"]["content"].as_str().unwrap(),
        "tokens after the reset are the reply"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_makes_sending_safe_to_repeat() {
    let app = TestApp::builder().sim(chat_sim()).spawn().await;
    let user = app.user("hedy").await;
    let character = app.ready_character(&user, "孟浩然").await;
    let path = format!("/v1/characters/{character}/messages");
    let send = |content: &'static str| {
        app.request(Method::POST, &path, Some(&user))
            .header("Idempotency-Key", "msg-1")
            .json(&serde_json::json!({ "content": content }))
            .send()
    };
    // The same request three times, two of them racing: one message, one job.
    let (a, b) = tokio::join!(send("春眠不觉晓"), send("春眠不觉晓"));
    let (a, b): (Value, Value) = (a.unwrap().json().await.unwrap(), b.unwrap().json().await.unwrap());
    let c: Value = send("春眠不觉晓").await.unwrap().json().await.unwrap();
    assert_eq!(a["job"]["id"], b["job"]["id"]);
    assert_eq!(a["job"]["id"], c["job"]["id"]);
    assert_eq!(a["message"]["id"], c["message"]["id"]);
    // A replay reads the stored message; the first answer was built from what was submitted.
    assert_eq!(a["message"], c["message"]);
    assert_eq!(send("处处闻啼鸟").await.unwrap().status(), 422, "the same key with another message");

    app.wait_for_job(&user, a["job"]["id"].as_str().unwrap()).await;
    let messages = app.db.count("select count(*) from messages").await;
    assert_eq!(messages, 2, "one user message and one reply");
    app.stop().await;
}

#[tokio::test]
async fn replies_whose_contexts_are_read_together_each_get_their_own() {
    // Under a burst the worker reads the claimed replies' contexts in rounds, one statement for
    // many: each ask must get its own character, message and history, and a key whose message is
    // not the user's, or is gone, must get nothing rather than a neighbour's row.
    use fastnpc_shared::ids::{CharacterId, MessageId, UserId};

    let app = TestApp::builder().sim(chat_sim()).spawn().await;
    let user = app.user("grace").await;
    let mut keys = Vec::new();
    let mut expected = Vec::new();
    for name in ["李白", "杜甫", "王维"] {
        let character: CharacterId = app.ready_character(&user, name).await.parse().unwrap();
        let owner = app.store.character_by_id(character).await.unwrap().expect("the character").user_id;
        let mut sent = Vec::new();
        for line in [format!("{name}：第一问"), format!("{name}：第二问")] {
            let response = app.send_message(&user, &character.to_string(), &line, Some(30)).await;
            assert_eq!(response.status(), 200, "the reply comes inline");
            let answered: Value = response.json().await.unwrap();
            let message: MessageId = answered["message"]["id"].as_str().unwrap().parse().unwrap();
            sent.push((message, line));
        }
        let (first, first_line) = &sent[0];
        let (second, second_line) = &sent[1];
        keys.push((owner, character, *second));
        expected.push(Some((name, second_line.clone(), Some(first_line.clone()))));
        keys.push((owner, character, *first));
        expected.push(Some((name, first_line.clone(), None)));
        keys.push((owner, character, MessageId::new()));
        expected.push(None);
    }
    // A message asked for by someone who is not its author: not a context.
    keys.push((UserId::new(), keys[0].1, keys[0].2));
    expected.push(None);

    let answers =
        futures::future::join_all(keys.iter().map(|&(user_id, character_id, message_id)| {
            app.store.chat_context(user_id, character_id, message_id, 200)
        }))
        .await;
    for ((answer, expected), key) in answers.into_iter().zip(&expected).zip(&keys) {
        let answer = answer.expect("the read succeeds");
        match (answer, expected) {
            (None, None) => {}
            (Some(context), Some((name, message, earlier))) => {
                assert_eq!(
                    (context.character.name.as_str(), &context.message),
                    (*name, message),
                    "the answer to {key:?}"
                );
                let transcript_users: Vec<&str> =
                    context.transcript.iter().filter(|(by_user, _)| *by_user).map(|(_, text)| text.as_str()).collect();
                assert_eq!(
                    transcript_users,
                    earlier.iter().map(String::as_str).collect::<Vec<_>>(),
                    "history of {key:?}"
                );
            }
            (answer, expected) => panic!("{key:?}: expected {expected:?}, got {:?}", answer.map(|c| c.message)),
        }
    }
    app.stop().await;
}
