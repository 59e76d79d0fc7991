//! Group chat: the server-side turn loop with a moderator, interruption, group memory, isolation.

use fastnpc_tests::{
    harness::{TestApp, TestUser},
    sim::{Fault, Rule},
    sse_client::SseEvent,
};
use reqwest::Method;
use serde_json::{Value, json};

/// Text that appears in moderator prompts only.
const MODERATOR: &str = "群聊中控";

pub(crate) fn moderator_says(speaker: &str, confidence: f64, times: Option<usize>) -> Rule {
    let reply = json!({"next_speaker": speaker, "reason": "轮到他了", "confidence": confidence}).to_string();
    Rule { when_contains: MODERATOR.into(), fault: Fault::Reply(reply), times }
}

/// A time stamp in a response, parsed: compared as strings, RFC 3339 times with different
/// fractional digits order wrongly (`…:05.120Z` sorts after `…:05.120001Z`).
fn timestamp(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let text = value.as_str().unwrap_or_else(|| panic!("a time stamp, not {value}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|error| panic!("{text}: {error}"))
}

async fn group_app(pause_ms: u64) -> TestApp {
    TestApp::builder().setting("FASTNPC_GROUP_TURN_PAUSE_MS", pause_ms.to_string()).spawn().await
}

async fn set_rounds(app: &TestApp, user: &TestUser, rounds: i32) {
    let response = app
        .request(Method::PATCH, "/v1/me", Some(user))
        .json(&json!({"max_group_rounds": rounds}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Creates three ready characters and a group of them; returns (group id, [(id, name)]).
async fn three_member_group(app: &TestApp, user: &TestUser) -> (String, Vec<(String, String)>) {
    let mut members = Vec::new();
    for name in ["李白", "杜甫", "王维"] {
        members.push((app.ready_character(user, name).await, name.to_owned()));
    }
    let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
    let created = app.post_json("/v1/groups", user, &json!({"name": "诗社", "character_ids": ids})).await;
    assert_eq!(created.status(), 201);
    let group: Value = created.json().await.unwrap();
    assert_eq!(group["group"]["members"].as_array().unwrap().len(), 3);
    (group["group"]["id"].as_str().unwrap().to_owned(), members)
}

async fn say(app: &TestApp, user: &TestUser, group: &str, content: &str) -> String {
    let response = app.post_json(&format!("/v1/groups/{group}/messages"), user, &json!({"content": content})).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["job"]["id"].as_str().unwrap().to_owned()
}

fn of_type<'a>(events: &'a [SseEvent], kind: &str) -> Vec<&'a SseEvent> {
    events.iter().filter(|e| e.event == kind).collect()
}

#[tokio::test]
async fn a_three_member_group_runs_the_configured_rounds() {
    let app = group_app(50).await;
    let user = app.user("ada").await;
    let (group, members) = three_member_group(&app, &user).await;
    set_rounds(&app, &user, 3).await;
    for (name, confidence) in [("杜甫", 0.9), ("王维", 0.95), ("李白", 0.85)] {
        app.sim.add_rule(moderator_says(name, confidence, Some(1)));
    }

    let job = say(&app, &user, &group, "诸位，今晚赏月作诗如何？").await;
    let events = app.collect_events(&user, &job, None).await;
    let speakers: Vec<&str> = of_type(&events, "speaker").iter().map(|e| e.data["name"].as_str().unwrap()).collect();
    assert_eq!(speakers, ["杜甫", "王维", "李白"]);
    let messages = of_type(&events, "message");
    assert_eq!(messages.len(), 3);
    for message in &messages {
        let speaker = message.data["message"]["character_id"].as_str().unwrap();
        let streamed: String = events
            .iter()
            .filter(|e| e.event == "token" && e.data["speaker"] == speaker)
            .map(|e| e.data["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            streamed,
            message.data["message"]["content"].as_str().unwrap(),
            "each reply streamed with its speaker"
        );
    }
    let waiting = of_type(&events, "waiting");
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].data["reason"], "max_rounds");
    assert_eq!(events.last().unwrap().event, "succeeded");

    let history: Value = app.get(&format!("/v1/groups/{group}/messages"), &user).await.json().await.unwrap();
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[3]["author"], "user");
    let names: Vec<&str> = items[..3].iter().rev().map(|m| m["speaker_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["杜甫", "王维", "李白"]);
    let du_fu = members.iter().find(|(_, name)| name == "杜甫").unwrap();
    assert_eq!(items[2]["character_id"], du_fu.0.as_str());
    assert_eq!(items[2]["moderator"]["decision"], "chosen");
    assert_eq!(items[2]["moderator"]["confidence"], 0.9);

    // Each reply's prompt names the other members, and sees the newest transcript.
    let reply_prompts: Vec<String> = app
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.stream)
        .map(|r| r.body["messages"][0]["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reply_prompts.len(), 3);
    assert!(
        reply_prompts[0].contains("你是杜甫")
            && reply_prompts[0].contains("角色 李白")
            && reply_prompts[0].contains("角色 王维")
    );
    assert!(reply_prompts[2].contains(items[2]["content"].as_str().unwrap()), "the third reply saw the first");
    app.stop().await;
}

#[tokio::test]
async fn low_confidence_stops_the_loop_and_waits_for_the_user() {
    let app = group_app(50).await;
    let user = app.user("grace").await;
    let (group, _) = three_member_group(&app, &user).await;
    app.sim.add_rule(moderator_says("李白", 0.3, None));

    let job = say(&app, &user, &group, "大家好").await;
    let events = app.collect_events(&user, &job, None).await;
    assert!(of_type(&events, "speaker").is_empty() && of_type(&events, "message").is_empty());
    let waiting = of_type(&events, "waiting");
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].data["reason"].as_str().unwrap().starts_with("moderator"));
    assert_eq!(events.last().unwrap().event, "succeeded");
    app.stop().await;
}

#[tokio::test]
async fn a_non_member_speaker_is_rejected_and_the_moderator_asked_again() {
    let app = group_app(50).await;
    let user = app.user("hedy").await;
    let (group, _) = three_member_group(&app, &user).await;
    set_rounds(&app, &user, 1).await;
    app.sim.add_rule(moderator_says("曹操", 0.95, Some(1)));
    app.sim.add_rule(moderator_says("王维", 0.9, Some(1)));

    let job = say(&app, &user, &group, "谁来说两句").await;
    let events = app.collect_events(&user, &job, None).await;
    let speakers = of_type(&events, "speaker");
    assert_eq!(speakers.len(), 1);
    assert_eq!(speakers[0].data["name"], "王维", "the non-member choice was refused");
    let moderator_calls = app.sim.requests().iter().filter(|r| r.prompt_text.contains(MODERATOR)).count();
    assert_eq!(moderator_calls, 2);
    // A moderator that never names a member ends the loop cleanly, waiting for the user.
    app.sim.add_rule(moderator_says("曹操", 0.95, None));
    let job = say(&app, &user, &group, "再来").await;
    let events = app.collect_events(&user, &job, None).await;
    assert!(of_type(&events, "speaker").is_empty());
    assert_eq!(of_type(&events, "waiting").len(), 1);
    assert_eq!(events.last().unwrap().event, "succeeded");
    app.stop().await;
}

#[tokio::test]
async fn middling_confidence_hands_the_turn_to_a_random_member() {
    let app = group_app(50).await;
    let user = app.user("katherine").await;
    let (group, members) = three_member_group(&app, &user).await;
    set_rounds(&app, &user, 1).await;
    app.sim.add_rule(moderator_says("李白", 0.6, None));
    let job = say(&app, &user, &group, "随便谁").await;
    let events = app.collect_events(&user, &job, None).await;
    let speaker = &of_type(&events, "speaker")[0].data;
    assert_eq!(speaker["decision"], "random");
    assert!(members.iter().any(|(id, _)| speaker["character_id"] == id.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn a_user_message_during_the_loop_interrupts_it_and_starts_a_new_one() {
    let app = group_app(1500).await;
    let user = app.user("margaret").await;
    let (group, _) = three_member_group(&app, &user).await;
    set_rounds(&app, &user, 3).await;
    app.sim.add_rule(moderator_says("李白", 0.9, None));

    let first = say(&app, &user, &group, "第一句").await;
    // Wait for the first stored reply: the loop is now in its pause.
    let mut stream = app.open_events(&user, &first, None).await;
    use futures::StreamExt;
    while let Some(event) = stream.next().await {
        if event.unwrap().event == "message" {
            break;
        }
    }
    let second = say(&app, &user, &group, "第二句，打断一下").await;
    let first_job = app.wait_for_job(&user, &first).await;
    assert_eq!(first_job["status"], "cancelled");
    assert_eq!(first_job["result"]["stopped"], "interrupted");
    assert_eq!(first_job["result"]["rounds"], 1, "the reply in progress was kept, no more rounds ran");
    let rest: Vec<SseEvent> = stream.map(|e| e.unwrap()).collect().await;
    assert_eq!(rest.last().unwrap().event, "cancelled");

    let second_job = app.wait_for_job(&user, &second).await;
    assert_eq!(second_job["status"], "succeeded");
    assert_eq!(second_job["result"]["rounds"], 3);
    assert!(
        timestamp(&first_job["finished_at"]) <= timestamp(&second_job["started_at"]),
        "the second job starts after the first ends: {} vs {}",
        first_job["finished_at"],
        second_job["started_at"]
    );
    let history: Value = app.get(&format!("/v1/groups/{group}/messages?limit=200"), &user).await.json().await.unwrap();
    let authors: Vec<&str> =
        history["items"].as_array().unwrap().iter().rev().map(|m| m["author"].as_str().unwrap()).collect();
    assert_eq!(authors, ["user", "character", "user", "character", "character", "character"]);
    app.stop().await;
}

#[tokio::test]
async fn each_member_remembers_the_group_from_its_own_point_of_view() {
    let app = group_app(0).await;
    let user = app.user("barbara").await;
    let (group, members) = three_member_group(&app, &user).await;
    set_rounds(&app, &user, 10).await;
    let budgets = json!({"memory_budgets": {"session": 50, "short_term": 5000, "long_term": 5000}});
    assert_eq!(app.request(Method::PATCH, "/v1/me", Some(&user)).json(&budgets).send().await.unwrap().status(), 200);
    app.sim.add_rule(moderator_says("李白", 0.9, None));

    for line in ["今晚月色真好", "再聊聊诗"] {
        let job = say(&app, &user, &group, line).await;
        assert_eq!(app.wait_for_job(&user, &job).await["status"], "succeeded");
    }
    app.wait_until_no_pending("compress_group_memory").await;

    for (id, name) in &members {
        let memory: Value = app.get(&format!("/v1/characters/{id}/memories"), &user).await.json().await.unwrap();
        assert!(!memory["short_term"].as_array().unwrap().is_empty(), "{name} remembers the group: {memory}");
        let own_view = format!("请从{name}自己的视角");
        let prompt = app.sim.requests().into_iter().find(|r| r.prompt_text.contains(&own_view));
        let prompt = prompt.unwrap_or_else(|| panic!("{name}'s memory was compressed from its point of view"));
        if name == "李白" {
            assert!(prompt.prompt_text.contains("我（李白）"), "its own lines are marked as its own");
        } else {
            assert!(prompt.prompt_text.contains("李白: "), "others' lines carry their names");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn groups_are_private_and_hold_only_their_owners_characters() {
    let app = group_app(50).await;
    let owner = app.user("owner").await;
    let other = app.user("other").await;
    let (group, members) = three_member_group(&app, &owner).await;
    let stranger = app.ready_character(&other, "曹操").await;

    for path in [format!("/v1/groups/{group}"), format!("/v1/groups/{group}/messages")] {
        assert_eq!(app.get(&path, &other).await.status(), 404, "{path}");
    }
    let post = app.post_json(&format!("/v1/groups/{group}/messages"), &other, &json!({"content": "hi"})).await;
    assert_eq!(post.status(), 404);
    let add = app.post_json(&format!("/v1/groups/{group}/members"), &other, &json!({"character_id": stranger})).await;
    assert_eq!(add.status(), 404);
    let remove = app
        .request(Method::DELETE, &format!("/v1/groups/{group}/members/{}", members[0].0), Some(&other))
        .send()
        .await
        .unwrap();
    assert_eq!(remove.status(), 404);
    assert_eq!(
        app.request(Method::DELETE, &format!("/v1/groups/{group}"), Some(&other)).send().await.unwrap().status(),
        404
    );
    let listed: Value = app.get("/v1/groups", &other).await.json().await.unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());

    // Nobody can put someone else's character in a group.
    let theirs =
        app.post_json(&format!("/v1/groups/{group}/members"), &owner, &json!({"character_id": stranger})).await;
    assert_eq!(theirs.status(), 422);
    let mixed = json!({"name": "混合", "character_ids": [members[0].0, stranger]});
    assert_eq!(app.post_json("/v1/groups", &owner, &mixed).await.status(), 422);

    let group_now: Value = app.get(&format!("/v1/groups/{group}"), &owner).await.json().await.unwrap();
    assert_eq!(group_now["group"]["members"].as_array().unwrap().len(), 3, "nothing changed");
    let messages = app.db.count("select count(*) from group_messages").await;
    assert_eq!(messages, 0);

    // The owner manages members by id; deleting a character leaves the group and nothing else.
    let removed = app
        .request(Method::DELETE, &format!("/v1/groups/{group}/members/{}", members[0].0), Some(&owner))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let deleted =
        app.request(Method::DELETE, &format!("/v1/characters/{}", members[1].0), Some(&owner)).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let group_now: Value = app.get(&format!("/v1/groups/{group}"), &owner).await.json().await.unwrap();
    let left: Vec<&str> =
        group_now["group"]["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(left, ["王维"]);
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_group_message_with_an_idempotency_key_starts_one_loop() {
    let app = group_app(50).await;
    let user = app.user("linus").await;
    let (group, _) = three_member_group(&app, &user).await;
    set_rounds(&app, &user, 1).await;
    app.sim.add_rule(moderator_says("李白", 0.9, None));
    let send = || {
        app.request(Method::POST, &format!("/v1/groups/{group}/messages"), Some(&user))
            .header("Idempotency-Key", "g-1")
            .json(&json!({"content": "大家好"}))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let second: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first["job"]["id"], second["job"]["id"]);
    assert_eq!(first["message"]["id"], second["message"]["id"]);
    app.wait_for_job(&user, first["job"]["id"].as_str().unwrap()).await;
    let user_messages = app.db.count("select count(*) from group_messages where author = 'user'").await;
    assert_eq!(user_messages, 1);
    app.stop().await;
}
