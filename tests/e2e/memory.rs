//! The three-layer memory: session → short-term → long-term, and its safety under concurrency.

use std::{collections::HashSet, time::Duration};

use fastnpc_tests::harness::{Backend, TestApp, TestUser};
use reqwest::Method;
use serde_json::{Value, json};

async fn set_budgets(app: &TestApp, user: &TestUser, session: i32, short_term: i32, long_term: i32) {
    let body = json!({"memory_budgets": {"session": session, "short_term": short_term, "long_term": long_term}});
    let response = app.request(Method::PATCH, "/v1/me", Some(user)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["user"]["memory_budgets"]["session"], session);
}

async fn memories(app: &TestApp, user: &TestUser, character: &str) -> Value {
    app.get(&format!("/v1/characters/{character}/memories"), user).await.json().await.unwrap()
}

#[tokio::test]
async fn a_long_conversation_moves_into_short_and_then_long_term_memory() {
    let app = TestApp::spawn().await;
    let user = app.user("ada").await;
    let character = app.ready_character(&user, "诸葛亮").await;
    set_budgets(&app, &user, 50, 60, 4000).await;

    // Turn 1 exceeds the 50-character session budget: a compression follows the reply.
    assert_eq!(app.send_message(&user, &character, "第1问：暗号是青龙一号，请记住", Some(20)).await.status(), 200);
    app.wait_until_no_pending("compress_memory").await;
    let memory = memories(&app, &user, &character).await;
    let short_term: Vec<String> =
        memory["short_term"].as_array().unwrap().iter().map(|e| e["content"].as_str().unwrap().to_owned()).collect();
    assert!(!short_term.is_empty(), "short-term memory appeared: {memory}");

    let history: Value = app.get(&format!("/v1/characters/{character}/messages"), &user).await.json().await.unwrap();
    let compressed: Vec<&Value> =
        history["items"].as_array().unwrap().iter().filter(|m| m["compressed"] == true).collect();
    assert!(!compressed.is_empty(), "the summarised messages are marked compressed");

    // The next prompt holds the memory and not the compressed messages.
    app.sim.reset();
    assert_eq!(app.send_message(&user, &character, "第2问：你还记得吗", Some(20)).await.status(), 200);
    let request = app.sim.requests().into_iter().find(|r| r.stream).expect("the reply's request");
    let system = request.body["messages"][0]["content"].as_str().unwrap();
    for entry in &short_term {
        assert!(system.contains(entry.as_str()), "the prompt contains the memory {entry:?}");
    }
    let transcript = system.split("⑥").nth(1).unwrap();
    for message in compressed {
        let content = message["content"].as_str().unwrap();
        assert!(!transcript.contains(content), "a compressed message is still in the transcript: {content}");
    }

    // Keep talking until short-term memory outgrows its 60 characters and is integrated.
    let mut long_term = Vec::new();
    for turn in 3..=12 {
        app.wait_until_no_pending("compress_memory").await;
        long_term = memories(&app, &user, &character).await["long_term"].as_array().unwrap().clone();
        if !long_term.is_empty() {
            break;
        }
        assert_eq!(app.send_message(&user, &character, &format!("第{turn}问：继续聊"), Some(20)).await.status(), 200);
    }
    assert!(!long_term.is_empty(), "long-term memory appeared");
    assert!(long_term.iter().all(|e| e["importance"].as_i64().is_some_and(|i| (4..=15).contains(&i))), "{long_term:?}");
    app.stop().await;
}

#[tokio::test]
async fn concurrent_chat_and_compression_never_lose_or_duplicate_memory() {
    let app = TestApp::builder().workers(3).spawn().await;
    let user = app.user("grace").await;
    let character = app.ready_character(&user, "李白").await;
    // A tiny session budget makes nearly every reply schedule a compression; a large short-term
    // budget keeps entries where they are added, so they can be counted.
    set_budgets(&app, &user, 50, 5000, 5000).await;

    let mut jobs = Vec::new();
    for i in 0..12 {
        let sent: Value =
            app.send_message(&user, &character, &format!("第{i}句：天气不错"), None).await.json().await.unwrap();
        jobs.push(sent["job"]["id"].as_str().unwrap().to_owned());
    }
    for job in &jobs {
        assert_eq!(app.wait_for_job(&user, job).await["status"], "succeeded");
    }
    app.wait_until_no_pending("compress_memory").await;

    let results = app
        .db
        .json_column("select result from jobs where kind = 'compress_memory' and status = 'succeeded' order by job_id")
        .await;
    assert!(results.len() >= 2, "several compressions ran ({})", results.len());
    let mut absorbed = HashSet::new();
    let mut added = 0;
    for result in &results {
        for id in result["absorbed_message_ids"].as_array().unwrap() {
            assert!(absorbed.insert(id.as_str().unwrap().to_owned()), "message {id} was summarised twice");
        }
        added += result["short_term_added"].as_u64().unwrap();
    }
    let compressed = app.db.id_column("select message_id from messages where compressed").await;
    let compressed: HashSet<String> = compressed.into_iter().map(|id| id.to_string()).collect();
    assert_eq!(compressed, absorbed, "exactly the summarised messages are marked");
    let memory = memories(&app, &user, &character).await;
    assert_eq!(memory["short_term"].as_array().unwrap().len() as u64, added, "no entry lost or duplicated");
    assert!(memory["long_term"].as_array().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn memories_can_be_read_and_edited_by_their_owner_only() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let other = app.user("other").await;
    let character = app.ready_character(&owner, "王维").await;
    let path = format!("/v1/characters/{character}/memories");
    let body =
        json!({"short_term": ["用户 | 喜欢 | 山水"], "long_term": [{"content": "用户 | 是 | 画家", "importance": 12}]});

    let put = app.request(Method::PUT, &path, Some(&owner)).json(&body).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let memory: Value = put.json().await.unwrap();
    assert_eq!(memory["short_term"][0]["content"], "用户 | 喜欢 | 山水");
    assert_eq!(memory["long_term"][0]["importance"], 12);
    assert_eq!(memory["version"], 1);

    // Another user reads and writes like a stranger to a missing character: the same answers,
    // byte for byte. The intruder's body differs from what is stored, so a write that went
    // through would show.
    let missing = format!("/v1/characters/{}/memories", uuid::Uuid::now_v7());
    let read = app.answer(Method::GET, &path, Some(&other), None).await;
    assert_eq!(read.status, 404, "{read:?}");
    assert_eq!(read, app.answer(Method::GET, &missing, Some(&other), None).await);
    let intruders = json!({"short_term": ["入侵者 | 改写了 | 记忆"], "long_term": [{"content": "用户 | 是 | 入侵者", "importance": 3}]});
    assert_ne!(intruders, body);
    let intrusion = app.answer(Method::PUT, &path, Some(&other), Some(&intruders)).await;
    assert_eq!(intrusion.status, 404, "{intrusion:?}");
    assert_eq!(intrusion, app.answer(Method::PUT, &missing, Some(&other), Some(&intruders)).await);
    assert_eq!(memories(&app, &owner, &character).await, memory, "the intrusion changed nothing, not even the version");
    let bad = json!({"short_term": [""], "long_term": []});
    assert_eq!(app.request(Method::PUT, &path, Some(&owner)).json(&bad).send().await.unwrap().status(), 422);
    let bad = json!({"short_term": [], "long_term": [{"content": "x", "importance": 99}]});
    assert_eq!(app.request(Method::PUT, &path, Some(&owner)).json(&bad).send().await.unwrap().status(), 422);
    assert_eq!(memories(&app, &owner, &character).await, memory, "refused edits changed nothing");
    app.stop().await;
}

#[tokio::test]
async fn the_memory_says_while_a_compression_of_it_is_pending() {
    use fastnpc_tests::sim::{Fault, Rule};
    // The compression's first call hangs until the 3 s call timeout; its retry answers.
    let app = TestApp::builder().setting("FASTNPC_LLM_TIMEOUT_SECS", "3").spawn().await;
    let user = app.user("ada").await;
    let character = app.ready_character(&user, "诸葛亮").await;
    set_budgets(&app, &user, 50, 4000, 4000).await;
    assert_eq!(memories(&app, &user, &character).await["compressing"], false);
    app.sim.add_rule(Rule {
        when_contains: "压缩成".into(),
        fault: Fault::Stall(std::time::Duration::from_secs(60)),
        times: Some(1),
    });

    assert_eq!(app.send_message(&user, &character, "第1问：暗号是青龙一号，请记住", Some(20)).await.status(), 200);
    app.wait_for_llm_in_flight(1).await;
    assert_eq!(memories(&app, &user, &character).await["compressing"], true, "the compression is running");
    app.wait_until_no_pending("compress_memory").await;
    let after = memories(&app, &user, &character).await;
    assert_eq!(after["compressing"], false);
    assert!(!after["short_term"].as_array().unwrap().is_empty(), "the compression wrote the memory: {after}");
    app.stop().await;
}

/// A reply's prompt is read in one piece (`Store::chat_context`; in Postgres one statement of
/// JSON aggregates): it must hold exactly what reading the character, the user, the message and
/// the memory and session snapshot one by one gives, in the same order.
#[tokio::test]
async fn a_replys_context_read_at_once_equals_its_parts_read_one_by_one() {
    use fastnpc_shared::{
        ids::{CharacterId, JobId, MessageId, UserId},
        store,
    };
    let app = TestApp::spawn().await;
    let user = app.user("ada").await;
    let character = app.ready_character(&user, "诸葛亮").await;
    let path = format!("/v1/characters/{character}/memories");
    let body = json!({"short_term": ["用户 | 喜欢 | 兵法", "用户 | 来自 | 成都"],
                      "long_term": [{"content": "用户 | 是 | 谋士", "importance": 12}, {"content": "用户 | 名叫 | 阿达"}]});
    assert_eq!(app.request(Method::PUT, &path, Some(&user)).json(&body).send().await.unwrap().status(), 200);
    let mut last = None;
    for turn in 1..=3 {
        let sent: Value = app
            .send_message(&user, &character, &format!("第{turn}问：如何治蜀？"), Some(20))
            .await
            .json()
            .await
            .unwrap();
        last = Some(sent["message"]["id"].as_str().unwrap().parse::<MessageId>().unwrap());
    }
    let me: Value = app.get("/v1/me", &user).await.json().await.unwrap();
    let user_id: UserId = me["user"]["id"].as_str().unwrap().parse().unwrap();
    let character_id: CharacterId = character.parse().unwrap();
    let message_id = last.unwrap();

    for limit in [200, 3] {
        let context = app.store.chat_context(user_id, character_id, message_id, limit).await.unwrap().unwrap();
        let character = app.store.character_by_id(character_id).await.unwrap().unwrap();
        let user = app.store.user(user_id).await.unwrap().unwrap();
        let message = app.store.message(user_id, message_id).await.unwrap().unwrap();
        let memories = app.store.memories(character_id).await.unwrap();
        let session = app.store.uncompressed_messages(character_id, Some(message_id), limit).await.unwrap();
        assert_eq!(format!("{:?}", context.character), format!("{character:?}"));
        assert_eq!(format!("{:?}", context.user), format!("{user:?}"));
        assert_eq!(context.message, message.content);
        assert_eq!(context.memories.version, memories.version);
        assert_eq!(
            (&context.memories.short_term, &context.memories.long_term),
            (&memories.short_term, &memories.long_term)
        );
        let transcript: Vec<(bool, String)> = session.into_iter().map(|m| (m.author == "user", m.content)).collect();
        assert_eq!(context.transcript, transcript, "session window {limit}");
    }
    let context = app.store.chat_context(user_id, character_id, message_id, 200).await.unwrap().unwrap();
    assert_eq!(context.transcript[0], (true, "第1问：如何治蜀？".to_owned()), "oldest first");
    assert!(
        !context.transcript.contains(&(true, "第3问：如何治蜀？".to_owned())),
        "the message answered is the user turn"
    );
    assert_eq!((context.memories.short_term.len(), context.memories.long_term.len()), (2, 2));
    let stranger: Value = app.get("/v1/me", &app.user("eve").await).await.json().await.unwrap();
    let stranger: UserId = stranger["user"]["id"].as_str().unwrap().parse().unwrap();
    assert!(
        app.store.chat_context(stranger, character_id, message_id, 200).await.unwrap().is_none(),
        "another user's message"
    );

    // In Postgres a reply's claim reads its context in the same statement: the very context the
    // handler would read (the reply before it included), so the handler need not read it again.
    // The job is claimed by hand, long before the re-publisher would send it to a worker.
    let (next_message, job_id) = (MessageId::new(), JobId::new());
    let quota = store::Quota { active_jobs: 100, characters: 100, groups: 100 };
    let submitted = app
        .store
        .submit_message(
            store::NewUserMessage::new(next_message, user_id, character_id, "第4问：何时北伐？"),
            store::jobs::NewJob::chat_reply(job_id, user_id, character_id, next_message),
            &quota,
        )
        .await
        .unwrap();
    assert_eq!(submitted, store::Submitted::Created);
    let claim = app.store.claim_job(job_id, Duration::from_secs(60)).await.unwrap().expect("claimable");
    let window = store::messages::CHAT_SESSION_WINDOW;
    let expected = app.store.chat_context(user_id, character_id, next_message, window).await.unwrap().unwrap();
    assert_eq!(expected.transcript.len(), 6, "three messages and their replies: {:?}", expected.transcript);
    match (app.backend(), &claim.chat_context.0) {
        (Backend::Distributed, Some(claimed)) => assert_eq!(format!("{claimed:?}"), format!("{expected:?}")),
        (Backend::Distributed, None) => panic!("the claim of a chat reply read no context"),
        // The embedded store claims through its one writer and leaves the read to the handler.
        (Backend::Embedded, claimed) => assert!(claimed.is_none()),
    }
    app.stop().await;
}
