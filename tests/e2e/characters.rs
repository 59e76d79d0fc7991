//! Character generation, end to end.

use fastnpc_shared::domain::CATEGORIES;
use fastnpc_tests::{
    harness::TestApp,
    sim::{Fault, Rule, SimConfig},
};
use serde_json::Value;
use std::time::Duration;

/// The headline flow: register, log in, create, watch over SSE, read back.
#[tokio::test]
async fn a_character_is_generated_with_nine_concurrent_calls_and_streamed() {
    // A latency long enough that the calls of one job visibly overlap in the simulator.
    let app = TestApp::builder()
        .sim(SimConfig { time_to_first_token: Duration::from_millis(300), ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.user("ada").await;

    let created = app.create_character(&user, "诸葛亮").await;
    assert_eq!(created["character"]["status"], "generating");
    assert_eq!(created["job"]["status"], "queued");
    let job_id = created["job"]["id"].as_str().unwrap();
    assert_eq!(created["job"]["status_url"], format!("/v1/jobs/{job_id}"));
    assert_eq!(created["job"]["events_url"], format!("/v1/jobs/{job_id}/events"));

    let events = app.collect_events(&user, job_id, None).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.id.expect("every event has an id")).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "ids are 1, 2, 3, … without gaps");
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"status"));
    assert!(events.iter().any(|e| e.event == "status" && e.data["status"] == "running"));
    let progress: Vec<&Value> = events.iter().filter(|e| e.event == "progress").map(|e| &e.data).collect();
    assert_eq!(progress.len(), 9, "one progress event per category");
    for (index, step) in progress.iter().enumerate() {
        assert_eq!(step["done"], index as u64 + 1);
        assert_eq!(step["total"], 9);
    }
    let mut steps: Vec<&str> = progress.iter().map(|p| p["step"].as_str().unwrap()).collect();
    steps.sort_unstable();
    let mut expected: Vec<&str> = CATEGORIES.iter().map(|c| c.key).collect();
    expected.sort_unstable();
    assert_eq!(steps, expected);
    let last = events.last().unwrap();
    assert_eq!(last.event, "succeeded");
    assert_eq!(kinds.iter().filter(|k| ["succeeded", "failed", "cancelled"].contains(k)).count(), 1);

    let character_id = created["character"]["id"].as_str().unwrap();
    assert_eq!(last.data["result"]["character_id"], character_id);
    let character: Value = app.get(&format!("/v1/characters/{character_id}"), &user).await.json().await.unwrap();
    let character = &character["character"];
    assert_eq!(character["status"], "ready");
    for category in &CATEGORIES {
        let stored = &character["profile"][category.key];
        for field in category.fields {
            let value = &stored[field.key];
            if field.list {
                assert!(value.is_array(), "{}.{} is a list", category.key, field.key);
            } else if (category.key, field.key) == ("source", "source_url") {
                assert_eq!(value, "", "pasted text has no address");
            } else {
                assert!(value.as_str().is_some_and(|s| !s.is_empty()), "{}.{} is filled", category.key, field.key);
            }
        }
    }
    let source_size = character["profile"]["source"]["source_size"].as_str().unwrap();
    assert!(
        source_size.starts_with('约') && source_size.ends_with('字'),
        "source size is the real size: {source_size}"
    );
    assert!(character["brief"].as_str().is_some_and(|b| !b.is_empty()), "the brief is written");

    let stats = app.sim.stats();
    assert_eq!(stats.requests_served, 10, "nine categories and one brief");
    assert!(stats.peak_in_flight >= 9, "the calls overlapped (peak {})", stats.peak_in_flight);
    assert_eq!(stats.json_mode, 9, "categories ask for JSON with a schema");

    let job = app.wait_for_job(&user, job_id).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["progress"]["done"], 9);
    assert_eq!(job["progress"]["total"], 9);
    assert_eq!(job["kind"], "generate_character");
    assert!(job["finished_at"].is_string() && job["started_at"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn a_category_with_invalid_json_is_asked_again() {
    let app = TestApp::spawn().await;
    let user = app.user("grace").await;
    // The knowledge category's first two replies are not JSON; the third is.
    app.sim.add_rule(Rule { when_contains: "知识与能力".into(), fault: Fault::InvalidJson, times: Some(2) });

    let created = app.create_character(&user, "李白").await;
    let job = app.wait_for_job(&user, created["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(app.sim.stats().requests_received, 12, "ten calls plus two retries");
    app.stop().await;
}

#[tokio::test]
async fn a_category_that_never_parses_fails_the_job_clearly() {
    let app = TestApp::spawn().await;
    let user = app.user("linus").await;
    app.sim.add_rule(Rule { when_contains: "背景故事".into(), fault: Fault::InvalidJson, times: None });

    let created = app.create_character(&user, "杜甫").await;
    let job_id = created["job"]["id"].as_str().unwrap();
    let events = app.collect_events(&user, job_id, None).await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "failed");
    assert_eq!(last.data["code"], "llm_malformed");
    assert!(last.data["message"].as_str().unwrap().contains("background"), "names the category: {}", last.data);

    let job = app.wait_for_job(&user, job_id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "llm_malformed");
    let character_id = created["character"]["id"].as_str().unwrap();
    let character: Value = app.get(&format!("/v1/characters/{character_id}"), &user).await.json().await.unwrap();
    assert_eq!(character["character"]["status"], "failed");
    assert!(character["character"]["profile"].is_null(), "no half-made profile is stored");
    app.stop().await;
}

#[tokio::test]
async fn transient_llm_errors_are_retried_inside_the_call() {
    let app = TestApp::spawn().await;
    let user = app.user("barbara").await;
    app.sim.push_faults([
        Fault::RateLimited { retry_after: Duration::from_millis(200) },
        Fault::ServerError,
        Fault::DropConnection,
    ]);
    let created = app.create_character(&user, "王维").await;
    let job = app.wait_for_job(&user, created["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let stats = app.sim.stats();
    assert_eq!(stats.requests_faulted, 3);
    assert_eq!(stats.requests_served, 10);
    app.stop().await;
}

#[tokio::test]
async fn characters_list_newest_first_and_delete() {
    let app = TestApp::spawn().await;
    let user = app.user("margaret").await;
    let mut ids = Vec::new();
    for name in ["甲", "乙", "丙"] {
        let created = app.create_character(&user, name).await;
        ids.push(created["character"]["id"].as_str().unwrap().to_owned());
        app.wait_for_job(&user, created["job"]["id"].as_str().unwrap()).await;
    }
    let listed: Value = app.get("/v1/characters", &user).await.json().await.unwrap();
    let listed: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids.iter().rev().map(String::as_str).collect::<Vec<_>>());

    let page: Value = app.get("/v1/characters?limit=2", &user).await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next_before"].as_str().unwrap();
    let rest: Value = app.get(&format!("/v1/characters?limit=2&before={next}"), &user).await.json().await.unwrap();
    assert_eq!(rest["items"][0]["id"], ids[0].as_str());

    let deleted =
        app.request(reqwest::Method::DELETE, &format!("/v1/characters/{}", ids[1]), Some(&user)).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get(&format!("/v1/characters/{}", ids[1]), &user).await.status(), 404);
    let again =
        app.request(reqwest::Method::DELETE, &format!("/v1/characters/{}", ids[1]), Some(&user)).send().await.unwrap();
    assert_eq!(again.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_original_job() {
    let app = TestApp::spawn().await;
    let user = app.user("katherine").await;
    let body = serde_json::json!({"name": "曹操", "source": {"kind": "text", "text": fastnpc_tests::harness::sample_source("曹操")}});
    let send = |body: Value| {
        app.request(reqwest::Method::POST, "/v1/characters", Some(&user))
            .header("Idempotency-Key", "k-1")
            .json(&body)
            .send()
    };
    let first: Value = send(body.clone()).await.unwrap().json().await.unwrap();
    let second = send(body.clone()).await.unwrap();
    assert_eq!(second.status(), 202);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["job"]["id"], second["job"]["id"]);
    assert_eq!(first["character"]["id"], second["character"]["id"]);

    let mut changed = body;
    changed["name"] = "刘备".into();
    let conflict = send(changed).await.unwrap();
    assert_eq!(conflict.status(), 422);

    let jobs = app.db.count("select count(*) from jobs").await;
    assert_eq!(jobs, 1);
    app.stop().await;
}

#[tokio::test]
async fn several_workers_share_one_queue() {
    let app = TestApp::builder().workers(3).worker_concurrency(2).spawn().await;
    let user = app.user("hedy").await;
    let mut jobs = Vec::new();
    for index in 0..8 {
        let created = app.create_character(&user, &format!("角色{index}")).await;
        jobs.push(created["job"]["id"].as_str().unwrap().to_owned());
    }
    for job in &jobs {
        assert_eq!(app.wait_for_job(&user, job).await["status"], "succeeded");
    }
    // Each job ran exactly once: ten calls each, no duplicates from redelivery.
    assert_eq!(app.sim.stats().requests_served, 80);
    app.stop().await;
}

/// The language of a character: detected from the source, or given; its prompts, the schema's
/// descriptions and the recorded prompt version follow it, and so do its replies.
#[tokio::test]
async fn a_character_speaks_the_language_of_its_source_or_the_one_asked_for() {
    use fastnpc_shared::prompts::Language;
    let app = TestApp::spawn().await;
    let user = app.user("ada").await;
    let english = "Ada Lovelace (1815-1852) was an English mathematician, known for her notes on Charles \
                   Babbage's Analytical Engine, which include the first published algorithm meant for a machine.";
    let (app_ref, user_ref) = (&app, &user);
    let create = |body: Value| async move { app_ref.post_json("/v1/characters", user_ref, &body).await };

    let created = create(serde_json::json!({"name": "Ada", "source": {"kind": "text", "text": english}})).await;
    assert_eq!(created.status(), 202);
    let created: Value = created.json().await.unwrap();
    let job = app.wait_for_job(&user, created["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["prompt_version"], Language::En.prompts().version());
    let id = created["character"]["id"].as_str().unwrap();
    let character: Value = app.get(&format!("/v1/characters/{id}"), &user).await.json().await.unwrap();
    assert_eq!(character["character"]["language"], "en");
    assert_eq!(character["character"]["prompt_version"], Language::En.prompts().version());
    assert!(character["character"]["profile"]["source"]["source_size"].as_str().unwrap().starts_with("about "));
    let category_requests: Vec<_> =
        app.sim.requests().into_iter().filter(|r| r.body.get("response_format").is_some()).collect();
    assert_eq!(category_requests.len(), 9);
    for request in &category_requests {
        assert!(!request.prompt_text.contains("请为人物"), "English prompts: {}", request.prompt_text);
        let schema = request.body["response_format"]["json_schema"]["schema"].to_string();
        assert!(!schema.contains('：'), "English field descriptions: {schema}");
    }
    let sent: Value = app.send_message(&user, id, "Hello!", Some(30)).await.json().await.unwrap();
    assert_eq!(sent["reply"]["prompt_version"], Language::En.prompts().version(), "{sent}");
    let chat_prompt = app.sim.requests().into_iter().last().unwrap().prompt_text;
    assert!(chat_prompt.contains("You are Ada"), "{chat_prompt}");

    // Asked for explicitly, the language wins over detection; an unknown one is refused.
    let chinese =
        create(serde_json::json!({"name": "Ada", "language": "zh", "source": {"kind": "text", "text": english}})).await;
    assert_eq!(chinese.status(), 202);
    let chinese: Value = chinese.json().await.unwrap();
    assert_eq!(chinese["character"]["language"], "zh");
    let refused =
        create(serde_json::json!({"name": "Ada", "language": "fr", "source": {"kind": "text", "text": english}})).await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("language"), "{problem}");
    app.stop().await;
}

/// Progress is not a commit per category: the lease's heartbeat carries it to the job row, so a
/// client that polls sees it within a heartbeat (a third of the lease) while the stream shows
/// each step at once.
#[tokio::test]
async fn polled_progress_arrives_with_the_heartbeat_while_a_step_is_still_running() {
    let app = TestApp::builder().setting("FASTNPC_JOB_LEASE_SECS", "3").spawn().await;
    // The background category's call hangs: eight steps finish, the ninth does not.
    app.sim.add_rule(Rule {
        when_contains: "背景故事".into(),
        fault: Fault::Stall(Duration::from_secs(600)),
        times: None,
    });
    let user = app.user("poller").await;
    let created = app.create_character(&user, "诸葛亮").await;
    let job_id = created["job"]["id"].as_str().unwrap().to_owned();

    let eight_done = async {
        loop {
            let body: Value = app.get(&format!("/v1/jobs/{job_id}"), &user).await.json().await.unwrap();
            if body["job"]["progress"]["done"] == 8 {
                return body["job"].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let job = tokio::time::timeout(Duration::from_secs(60), eight_done).await.expect("the row shows the eight steps");
    assert_eq!(job["status"], "running", "the ninth is still being written");
    assert_eq!(job["progress"]["total"], 9);

    let cancel =
        app.request(reqwest::Method::POST, &format!("/v1/jobs/{job_id}/cancel"), Some(&user)).send().await.unwrap();
    assert_eq!(cancel.status(), 202);
    assert_eq!(app.wait_for_job(&user, &job_id).await["status"], "cancelled");
    app.stop().await;
}

/// Under a burst, the broker's confirms are recorded in rounds (one write for all that arrive
/// together): none is lost at a round's edge, and each job runs once. The workers read the
/// claimed jobs' characters in rounds too: each job writes the character it was made for.
#[tokio::test]
async fn a_burst_of_characters_is_confirmed_in_rounds_and_each_job_runs_once() {
    let app = TestApp::spawn().await;
    let user = app.user("burst").await;
    let created = futures::future::join_all((0..40).map(|i| {
        let (app, user) = (&app, &user);
        async move { app.create_character(user, &format!("角色{i}")).await }
    }))
    .await;
    let jobs: Vec<String> = created.iter().map(|c| c["job"]["id"].as_str().unwrap().to_owned()).collect();
    for job in &jobs {
        app.wait_for_job_published(job).await;
    }
    for (i, (job, created)) in jobs.iter().zip(&created).enumerate() {
        let finished = app.wait_for_job(&user, job).await;
        assert_eq!(finished["status"], "succeeded");
        assert_eq!(finished["attempts"], 1, "claimed once");
        assert_eq!(finished["result"]["character_id"], created["character"]["id"]);
        assert_eq!(finished["result"]["name"], format!("角色{i}"));
    }
    assert_eq!(app.sim.stats().requests_served, 400, "ten calls per character, no job run twice");
    app.stop().await;
}

/// The 202 of `POST /v1/characters` is built from what the submission stored, not read back
/// after it: it must be exactly what a read of the character answers, to the microsecond.
#[tokio::test]
async fn the_accepted_character_is_the_one_a_read_answers() {
    let app = TestApp::spawn().await;
    // Every call hangs, so nothing changes the character between the two answers.
    app.sim.add_rule(Rule { when_contains: String::new(), fault: Fault::Stall(Duration::from_secs(600)), times: None });
    let user = app.user("reader").await;
    let created = app.create_character(&user, "王昭君").await;
    let id = created["character"]["id"].as_str().unwrap();
    let read: Value = app.get(&format!("/v1/characters/{id}"), &user).await.json().await.unwrap();
    assert_eq!(created["character"], read["character"]);
    assert_eq!(created["character"]["status"], "generating");
    assert!(created["character"]["created_at"].is_string(), "{created}");
    let job_id = created["job"]["id"].as_str().unwrap();
    // Cancelled outright while queued (200) or asked to stop while running (202).
    let cancel = app.request(reqwest::Method::POST, &format!("/v1/jobs/{job_id}/cancel"), Some(&user)).send().await;
    assert!(matches!(cancel.unwrap().status().as_u16(), 200 | 202));
    app.stop().await;
}
