//! Editing characters: JSON Merge Patch with ETag / If-Match, the versions every change leaves,
//! restoring one, and what may not be edited.

use std::time::Duration;

use fastnpc_tests::{
    harness::{TestApp, TestUser},
    sim::SimConfig,
};
use reqwest::{Method, Response};
use serde_json::{Value, json};

async fn patch(app: &TestApp, user: &TestUser, character: &str, if_match: Option<&str>, body: &Value) -> Response {
    let mut request = app
        .request(Method::PATCH, &format!("/v1/characters/{character}"), Some(user))
        .header("content-type", "application/merge-patch+json")
        .body(body.to_string());
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    request.send().await.unwrap()
}

async fn character(app: &TestApp, user: &TestUser, id: &str) -> (String, Value) {
    let response = app.get(&format!("/v1/characters/{id}"), user).await;
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    (etag, body["character"].clone())
}

async fn versions(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let response = app.get(&format!("/v1/characters/{id}/versions"), user).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn an_edit_becomes_the_next_version_the_chat_uses_and_an_older_one_can_be_restored() {
    let app = TestApp::builder()
        .sim(SimConfig { time_to_first_token: Duration::from_millis(20), ..SimConfig::default() })
        .spawn()
        .await;
    let ada = app.user("ada").await;
    let id = app.ready_character(&ada, "诸葛亮").await;
    let (etag, generated) = character(&app, &ada, &id).await;
    assert_eq!((etag.as_str(), &generated["version"]), ("\"1\"", &json!(1)), "the generation is version 1");

    let edit = json!({"name": "孔明", "profile": {"personality": {"traits": "谨慎而果决（已编辑）"}}});
    let response = patch(&app, &ada, &id, Some(&etag), &edit).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let edited: Value = response.json().await.unwrap();
    let edited = &edited["character"];
    assert_eq!(edited["name"], "孔明");
    assert_eq!(edited["version"], 2);
    assert_eq!(edited["profile"]["personality"]["traits"], "谨慎而果决（已编辑）");
    // Everything the patch did not name is as it was.
    assert_eq!(edited["brief"], generated["brief"]);
    let mut expected = generated["profile"].clone();
    expected["personality"]["traits"] = json!("谨慎而果决（已编辑）");
    assert_eq!(edited["profile"], expected);

    // A second editor still holding version 1 is refused, and changes nothing.
    let stale = patch(&app, &ada, &id, Some(&etag), &json!({"brief": "另一个版本"})).await;
    assert_eq!(stale.status(), 412);
    let problem: Value = stale.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/version-mismatch");
    let (etag, current) = character(&app, &ada, &id).await;
    assert_eq!((etag.as_str(), &current["brief"]), ("\"2\"", &generated["brief"]));
    // A patch that changes nothing writes no version.
    let same = patch(&app, &ada, &id, None, &json!({"name": "孔明"})).await;
    assert_eq!(same.headers()["etag"], "\"2\"");

    let listed = versions(&app, &ada, &id).await;
    assert_eq!(listed["current"], 2);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|v| v["version"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(items[0]["change"], "edited");
    assert_eq!(items[0]["detail"]["fields"], json!(["name", "profile.personality.traits"]));
    assert_eq!(items[1]["change"], "generated");

    // The chat prompt is written from the current version.
    let sent = app.send_message(&ada, &id, "先生近来可好？", Some(30)).await;
    assert_eq!(sent.status(), 200);
    let request = app.sim.requests().into_iter().rfind(|r| r.stream).expect("a streamed chat request");
    let system = request.body["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("谨慎而果决（已编辑）"), "the edited trait is in the prompt");
    assert!(system.contains("孔明"), "the new name is in the prompt");

    // Restoring version 1 makes it current again, as version 3.
    let first = app.get(&format!("/v1/characters/{id}/versions/1"), &ada).await.json::<Value>().await.unwrap();
    assert_eq!((&first["name"], &first["profile"]), (&generated["name"], &generated["profile"]));
    let restored = app
        .request(Method::POST, &format!("/v1/characters/{id}/versions/1/restore"), Some(&ada))
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), 200);
    assert_eq!(restored.headers()["etag"], "\"3\"");
    let restored: Value = restored.json().await.unwrap();
    assert_eq!(restored["character"]["name"], generated["name"]);
    assert_eq!(restored["character"]["profile"], generated["profile"]);
    let newest = &versions(&app, &ada, &id).await["items"][0];
    assert_eq!((&newest["version"], &newest["change"]), (&json!(3), &json!("restored")));
    assert_eq!(newest["detail"], json!({"from_version": 1}));
    app.stop().await;
}

#[tokio::test]
async fn a_patch_that_does_not_fit_the_profile_is_refused_whole_naming_the_field() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app.ready_character(&ada, "李白").await;
    let (_, before) = character(&app, &ada, &id).await;
    let refusals = [
        (json!({"nickname": "太白"}), "nickname"),
        (json!({"name": null}), "name"),
        (json!({"name": "  "}), "name is empty"),
        (json!({"profile": {"powers": {"flight": "yes"}}}), "profile.powers"),
        (json!({"profile": {"personality": {"wings": "two"}}}), "profile.personality.wings"),
        (json!({"profile": {"personality": {"traits": ["豪放"]}}}), "profile.personality.traits must be a string"),
        (json!({"profile": {"background": {"experiences": "醉酒"}}}), "profile.background.experiences"),
        (json!({"profile": {"knowledge": {"skills": null}}}), "profile.knowledge.skills cannot be removed"),
        (json!({"profile": {"knowledge": null}}), "profile.knowledge"),
        // A valid change beside an invalid one: neither is written.
        (json!({"brief": "诗仙", "profile": {"knowledge": {"skills": 5}}}), "profile.knowledge.skills"),
    ];
    for (body, named) in refusals {
        let response = patch(&app, &ada, &id, None, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(named), "{body}: {detail}");
    }
    let malformed = app
        .request(Method::PATCH, &format!("/v1/characters/{id}"), Some(&ada))
        .header("content-type", "application/merge-patch+json")
        .header("if-match", "1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400, "an If-Match that is not an ETag");
    let (etag, after) = character(&app, &ada, &id).await;
    assert_eq!(etag, "\"1\"");
    assert_eq!(after, before, "nothing was written");
    assert_eq!(versions(&app, &ada, &id).await["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_generating_character_cannot_be_edited_and_anothers_cannot_be_seen() {
    // Generation waits a minute for the model, so the character stays `generating` meanwhile.
    let app = TestApp::builder()
        .sim(SimConfig { time_to_first_token: Duration::from_secs(60), ..SimConfig::default() })
        .spawn()
        .await;
    let ada = app.user("ada").await;
    let eve = app.user("eve").await;
    let created = app.create_character(&ada, "王维").await;
    let generating = created["character"]["id"].as_str().unwrap();
    let response = patch(&app, &ada, generating, None, &json!({"name": "摩诘"})).await;
    assert_eq!(response.status(), 409);
    assert_eq!(response.json::<Value>().await.unwrap()["type"], "/problems/character-not-ready");
    assert_eq!(versions(&app, &ada, generating).await["items"], json!([]));

    for (method, path) in [
        (Method::PATCH, format!("/v1/characters/{generating}")),
        (Method::GET, format!("/v1/characters/{generating}/versions")),
        (Method::GET, format!("/v1/characters/{generating}/versions/1")),
        (Method::POST, format!("/v1/characters/{generating}/versions/1/restore")),
    ] {
        let response = app.request(method.clone(), &path, Some(&eve)).json(&json!({"name": "x"})).send().await.unwrap();
        assert_eq!(response.status(), 404, "{method} {path} as another user");
    }
    let (_, unchanged) = character(&app, &ada, generating).await;
    assert_eq!(unchanged["name"], "王维");
    app.stop().await;
}

#[tokio::test]
async fn a_copy_has_the_profile_but_no_conversation_and_counts_against_the_cap() {
    let app = TestApp::builder()
        .sim(SimConfig { time_to_first_token: Duration::from_millis(20), ..SimConfig::default() })
        .setting("FASTNPC_LIMIT_CHARACTERS", "2")
        .spawn()
        .await;
    let ada = app.user("ada").await;
    let eve = app.user("eve").await;
    let id = app.ready_character(&ada, "杜甫").await;
    let edited = patch(&app, &ada, &id, None, &json!({"brief": "诗圣（已编辑）"})).await;
    assert_eq!(edited.status(), 200);
    assert_eq!(app.send_message(&ada, &id, "近来可好？", Some(30)).await.status(), 200);
    let (_, original) = character(&app, &ada, &id).await;

    let copy_path = format!("/v1/characters/{id}/copy");
    let response =
        app.request(Method::POST, &copy_path, Some(&ada)).json(&json!({"name": "杜子美"})).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let copy = &body["character"];
    let copy_id = copy["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/characters/{copy_id}"));
    assert_ne!(copy_id, id);
    assert_eq!((&copy["name"], &copy["status"], &copy["version"]), (&json!("杜子美"), &json!("ready"), &json!(1)));
    for field in ["profile", "brief", "source", "language", "prompt_version"] {
        assert_eq!(copy[field], original[field], "{field} is the original's current one");
    }
    assert_eq!(body["job"], Value::Null, "no generation job");
    let history: Value = app.get(&format!("/v1/characters/{copy_id}/messages"), &ada).await.json().await.unwrap();
    assert_eq!(history["items"], json!([]), "no conversation");
    let memories: Value = app.get(&format!("/v1/characters/{copy_id}/memories"), &ada).await.json().await.unwrap();
    assert_eq!(memories["long_term"], json!([]));
    let copied = &versions(&app, &ada, copy_id).await["items"];
    assert_eq!(copied.as_array().unwrap().len(), 1);
    assert_eq!(copied[0]["change"], "copied");
    assert_eq!(copied[0]["detail"], json!({"from_character": id, "from_version": 2}));
    // The copy chats on its own.
    assert_eq!(app.send_message(&ada, copy_id, "你是谁？", Some(30)).await.status(), 200);

    // An empty body keeps the name; here the user is at the cap of two characters.
    let over = app.request(Method::POST, &copy_path, Some(&ada)).send().await.unwrap();
    assert_eq!(over.status(), 429);
    assert_eq!(app.db.count("select count(*) from characters").await, 2, "nothing was written");
    let not_yours = app.request(Method::POST, &copy_path, Some(&eve)).send().await.unwrap();
    assert_eq!(not_yours.status(), 404);
    let unknown_field =
        app.request(Method::POST, &copy_path, Some(&ada)).json(&json!({"title": "x"})).send().await.unwrap();
    assert_eq!(unknown_field.status(), 422);
    app.stop().await;
}
