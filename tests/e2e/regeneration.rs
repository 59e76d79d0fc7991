//! Regenerating chosen categories of a ready character: only they (and the brief, when asked)
//! change, edits elsewhere survive, the job streams like a generation and a failed one is
//! retried with the same request.

use fastnpc_tests::{
    harness::{TestApp, TestUser},
    sim::{Fault, Rule},
};
use reqwest::Method;
use serde_json::{Value, json};

async fn character(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let response = app.get(&format!("/v1/characters/{id}"), user).await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["character"].clone()
}

async fn regenerate(app: &TestApp, user: &TestUser, id: &str, categories: &[&str]) -> reqwest::Response {
    app.post_json(&format!("/v1/characters/{id}/regenerate"), user, &json!({ "categories": categories })).await
}

#[tokio::test]
async fn regeneration_rewrites_only_the_named_categories_and_keeps_edits_elsewhere() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app.ready_character(&ada, "诸葛亮").await;
    let generated = character(&app, &ada, &id).await;
    // Edits in a category that will be regenerated, and in one that will not.
    let edit = json!({"profile": {"personality": {"traits": "（已编辑的性格）"}, "basic_identity": {"appearance": "（已编辑的外貌）"}}});
    let edited = app
        .request(Method::PATCH, &format!("/v1/characters/{id}"), Some(&ada))
        .header("content-type", "application/merge-patch+json")
        .body(edit.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), 200, "{}", edited.text().await.unwrap());
    let requests_before = app.sim.stats().requests_received;

    let response = regenerate(&app, &ada, &id, &["personality", "brief", "personality"]).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    let job_id = accepted["job"]["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/jobs/{job_id}"));
    assert_eq!(accepted["character"]["version"], 2, "the character is unchanged until the job ends");

    let events = app.collect_events(&ada, job_id, None).await;
    let steps: Vec<(&str, u64, u64)> = events
        .iter()
        .filter(|event| event.event == "progress")
        .map(|event| {
            let data: &Value = &event.data;
            (data["step"].as_str().unwrap(), data["done"].as_u64().unwrap(), data["total"].as_u64().unwrap())
        })
        .collect();
    let mut names: Vec<&str> = steps.iter().map(|(step, _, _)| *step).collect();
    names.sort_unstable();
    assert_eq!(names, ["brief", "personality"], "a progress event per regenerated part: {steps:?}");
    assert!(steps.iter().all(|(_, _, total)| *total == 2));
    assert_eq!(events.last().unwrap().event, "succeeded");
    assert_eq!(app.sim.stats().requests_received - requests_before, 2, "one LLM call per regenerated part");

    let job = app.wait_for_job(&ada, job_id).await;
    assert_eq!(job["kind"], "regenerate_character");
    assert_eq!(job["result"]["version"], 3);
    assert_eq!(job["result"]["categories"], json!(["personality"]));

    let now = character(&app, &ada, &id).await;
    assert_eq!(now["version"], 3);
    let personality = &now["profile"]["personality"];
    assert_ne!(personality["traits"], "（已编辑的性格）", "the edit in a regenerated category is replaced");
    assert_ne!(personality, &generated["profile"]["personality"], "written again, not restored");
    assert_ne!(now["brief"], generated["brief"], "the brief was asked for");
    assert_eq!(now["profile"]["basic_identity"]["appearance"], "（已编辑的外貌）", "an edit elsewhere survives");
    for category in generated["profile"].as_object().unwrap().keys() {
        if !["personality", "basic_identity"].contains(&category.as_str()) {
            assert_eq!(now["profile"][category], generated["profile"][category], "{category} is untouched");
        }
    }

    let versions: Value = app.get(&format!("/v1/characters/{id}/versions"), &ada).await.json().await.unwrap();
    let newest = &versions["items"][0];
    assert_eq!((&newest["version"], &newest["change"]), (&json!(3), &json!("regenerated")));
    assert_eq!(newest["detail"], json!({"categories": ["personality"], "brief": true, "job_id": job_id}));
    // The edited text is not lost: version 2 keeps it.
    let second: Value = app.get(&format!("/v1/characters/{id}/versions/2"), &ada).await.json().await.unwrap();
    assert_eq!(second["profile"]["personality"]["traits"], "（已编辑的性格）");

    // The next reply's prompt is written from the regenerated profile.
    let sent = app.send_message(&ada, &id, "先生近来可好？", Some(30)).await;
    assert_eq!(sent.status(), 200);
    let request = app.sim.requests().into_iter().rfind(|r| r.stream).expect("a streamed chat request");
    let system = request.body["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains(personality["traits"].as_str().unwrap()), "the regenerated trait is in the prompt");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_regeneration_changes_nothing_and_its_retry_asks_the_same() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let id = app.ready_character(&ada, "杜甫").await;
    let before = character(&app, &ada, &id).await;
    // The background category's prompt never gets valid JSON back.
    app.sim.add_rule(Rule { when_contains: "背景故事".into(), fault: Fault::InvalidJson, times: Some(3) });

    let accepted: Value = regenerate(&app, &ada, &id, &["background", "worldview"]).await.json().await.unwrap();
    let job_id = accepted["job"]["id"].as_str().unwrap();
    let failed = app.wait_for_job(&ada, job_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"]["message"].as_str().unwrap().contains("background"), "{failed}");
    let after = character(&app, &ada, &id).await;
    assert_eq!(
        (&after["version"], &after["profile"], &after["status"]),
        (&before["version"], &before["profile"], &json!("ready"))
    );

    let retry = app.request(Method::POST, &format!("/v1/jobs/{job_id}/retry"), Some(&ada)).send().await.unwrap();
    assert_eq!(retry.status(), 202);
    let retry: Value = retry.json().await.unwrap();
    let retried = app.wait_for_job(&ada, retry["job"]["id"].as_str().unwrap()).await;
    assert_eq!(retried["status"], "succeeded", "{retried}");
    assert_eq!(retried["result"]["categories"], json!(["background", "worldview"]), "the retry asked the same");
    let after = character(&app, &ada, &id).await;
    assert_eq!(after["version"], before["version"].as_i64().unwrap() + 1);
    assert_ne!(after["profile"]["background"], before["profile"]["background"]);
    assert_ne!(after["profile"]["worldview"], before["profile"]["worldview"]);
    assert_eq!(after["profile"]["basic_identity"], before["profile"]["basic_identity"]);
    assert_eq!(after["brief"], before["brief"], "the brief was not asked for");
    app.stop().await;
}

#[tokio::test]
async fn a_regeneration_that_cannot_run_is_refused_and_nothing_is_queued() {
    let app = TestApp::spawn().await;
    let ada = app.user("ada").await;
    let eve = app.user("eve").await;
    let id = app.ready_character(&ada, "李白").await;
    let jobs_before = app.db.count("select count(*) from jobs").await;

    for (body, expected) in [
        (json!({"categories": []}), "categories"),
        (json!({"categories": ["personality", "wings"]}), "categories[1]"),
        (json!({"categories": "personality"}), "categories"),
        (json!({"categories": ["brief"], "extra": 1}), "extra"),
    ] {
        let response = app.post_json(&format!("/v1/characters/{id}/regenerate"), &ada, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains(expected), "{body}: {problem}");
    }
    let response = regenerate(&app, &eve, &id, &["brief"]).await;
    assert_eq!(response.status(), 404, "another user's character is not there");

    // A character still generating has nothing to regenerate.
    app.sim.add_rule(Rule {
        when_contains: "背景故事".into(),
        fault: Fault::Stall(std::time::Duration::from_secs(600)),
        times: None,
    });
    let generating = app.create_character(&ada, "王维").await;
    let generating_id = generating["character"]["id"].as_str().unwrap();
    let response = regenerate(&app, &ada, generating_id, &["brief"]).await;
    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/character-not-ready");
    assert_eq!(app.db.count("select count(*) from jobs").await, jobs_before + 1, "only the generation was queued");

    // The same Idempotency-Key gives the same job back.
    let keyed = || {
        app.request(Method::POST, &format!("/v1/characters/{id}/regenerate"), Some(&ada))
            .header("idempotency-key", "regen-1")
            .json(&json!({"categories": ["brief"]}))
    };
    let first: Value = keyed().send().await.unwrap().json().await.unwrap();
    let again = keyed().send().await.unwrap();
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["job"]["id"], first["job"]["id"]);
    let job = app.wait_for_job(&ada, first["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    app.stop().await;
}
