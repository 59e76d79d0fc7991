//! LLM usage, end to end: what the simulator reported reaches the job and the user's day, stays
//! after the job is deleted, and the daily token budget refuses new work.

use std::time::Duration;

use chrono::Utc;
use fastnpc_tests::harness::{TestApp, TestUser};
use reqwest::Method;
use serde_json::{Value, json};

async fn usage_of(app: &TestApp, user: &TestUser, query: &str) -> (u16, Value) {
    let response = app.get(&format!("/v1/me/usage{query}"), user).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

/// (calls, prompt tokens, completion tokens) of a usage object.
fn counts(usage: &Value) -> (u64, u64, u64) {
    let count = |field: &str| usage[field].as_u64().unwrap_or_else(|| panic!("{field} in {usage}"));
    (count("calls"), count("prompt_tokens"), count("completion_tokens"))
}

#[tokio::test]
async fn usage_is_what_the_model_reported_per_job_and_per_day_and_outlives_the_job() {
    let app = TestApp::spawn().await;
    let user = app.user("ada").await;
    let today_before = Utc::now().date_naive();

    let created = app.create_character(&user, "诸葛亮").await;
    let generation = created["job"]["id"].as_str().unwrap().to_owned();
    let job = app.wait_for_job(&user, &generation).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let stats = app.sim.stats();
    let generated = counts(&job["usage"]);
    assert_eq!(generated.0, 10, "nine categories and the brief: {job}");
    assert_eq!(
        generated,
        (stats.requests_served, stats.prompt_tokens_reported, stats.completion_tokens_reported),
        "the tokens the simulator reported"
    );
    assert!(generated.1 > 0 && generated.2 > 0);

    let (status, usage) = usage_of(&app, &user, "").await;
    assert_eq!(status, 200, "{usage}");
    let days = usage["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{usage}");
    let day = days[0]["day"].as_str().unwrap();
    let today_after = Utc::now().date_naive();
    assert!([today_before, today_after].iter().any(|today| today.to_string() == day), "{day} is today (UTC)");
    assert_eq!(counts(&days[0]), generated);
    assert_eq!(counts(&usage["total"]), generated);

    // A chat reply: streamed, its usage from the stream's last chunk. It is not cut.
    let character = created["character"]["id"].as_str().unwrap().to_owned();
    let sent = app.send_message(&user, &character, "先生安好？", Some(30)).await;
    assert_eq!(sent.status(), 200);
    let sent: Value = sent.json().await.unwrap();
    assert_eq!(sent["reply"]["truncated"], false, "{sent}");
    let chinese = fastnpc_shared::prompts::Language::Zh.prompts().version();
    assert_eq!(sent["reply"]["prompt_version"], chinese, "the Chinese set wrote it: {sent}");
    assert_eq!(sent["message"]["truncated"], false);
    let chat = app.wait_for_job(&user, sent["job"]["id"].as_str().unwrap()).await;
    assert_eq!(chat["result"]["message"]["truncated"], false, "{chat}");
    let replied = counts(&chat["usage"]);
    assert_eq!(replied.0, 1, "{chat}");
    assert!(replied.1 > 0 && replied.2 > 0, "{chat}");
    let history: Value = app.get(&format!("/v1/characters/{character}/messages"), &user).await.json().await.unwrap();
    assert!(history["items"].as_array().unwrap().iter().all(|m| m["truncated"] == false), "{history}");

    app.wait_until_no_pending("compress_memory").await;
    // A stream is counted once its body ends, which may be just after the client is done.
    let settled = async {
        while app.sim.stats().in_flight > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), settled).await.expect("the simulator settles");
    let stats = app.sim.stats();
    let (_, usage) = usage_of(&app, &user, "?days=1").await;
    assert_eq!(
        counts(&usage["total"]),
        (stats.requests_served, stats.prompt_tokens_reported, stats.completion_tokens_reported),
        "every call of the day, whichever job made it"
    );
    let spent = counts(&usage["total"]);

    // The character goes, and its jobs with it; the user's spend stays.
    let deleted =
        app.request(Method::DELETE, &format!("/v1/characters/{character}"), Some(&user)).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get(&format!("/v1/jobs/{generation}"), &user).await.status(), 404);
    let (_, usage) = usage_of(&app, &user, "?days=366").await;
    assert_eq!(counts(&usage["total"]), spent, "{usage}");

    // Another user's usage is their own.
    let other = app.user("eve").await;
    let (_, usage) = usage_of(&app, &other, "").await;
    assert_eq!(usage, json!({"days": [], "total": {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}}));

    for bad in ["0", "367", "week"] {
        let (status, problem) = usage_of(&app, &user, &format!("?days={bad}")).await;
        assert_eq!(status, 422, "days={bad}");
        assert!(problem["detail"].as_str().unwrap().contains("days"), "{problem}");
    }
    let anonymous = app.request(Method::GET, "/v1/me/usage", None).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn past_the_daily_token_budget_new_jobs_are_refused_until_midnight_utc() {
    let app = TestApp::builder().setting("FASTNPC_LIMIT_DAILY_TOKENS", "1").spawn().await;
    let user = app.user("ada").await;
    // Nothing spent yet: the first job is let through, and spends more than the budget.
    let character = app.ready_character(&user, "诸葛亮").await;
    let group: Value = app
        .post_json("/v1/groups", &user, &json!({"name": "g", "character_ids": [character]}))
        .await
        .json()
        .await
        .unwrap();
    let group = group["group"]["id"].as_str().unwrap().to_owned();
    let rows = async || {
        let db = &app.db;
        (
            db.count("select count(*) from characters").await,
            db.count("select count(*) from jobs").await,
            db.count("select count(*) from messages").await,
            db.count("select count(*) from group_messages").await,
        )
    };
    let before = rows().await;

    let source = json!({"kind": "text", "text": fastnpc_tests::harness::sample_source("刘备")});
    let refusals = [
        app.post_json("/v1/characters", &user, &json!({"name": "刘备", "source": source})).await,
        app.send_message(&user, &character, "先生安好？", Some(5)).await,
        app.post_json(&format!("/v1/groups/{group}/messages"), &user, &json!({"content": "议事"})).await,
    ];
    for refused in refusals {
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["content-type"], "application/problem+json");
        let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        let now = Utc::now();
        let midnight = now.date_naive().succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
        let until_midnight = (midnight - now).num_seconds().unsigned_abs();
        // Either side of midnight, give or take the request's time.
        let off = retry_after.abs_diff(until_midnight) % 86_400;
        assert!(off <= 5 || off >= 86_395, "Retry-After {retry_after} s, midnight in {until_midnight} s");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/too-many-requests");
        assert_eq!(problem["title"], "Too many requests");
        assert_eq!(problem["status"], 429);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("daily budget of 1 LLM tokens") && detail.contains("00:00 UTC"), "{detail}");
    }
    assert_eq!(rows().await, before, "nothing was created");

    // The budget is per user.
    let other = app.user("eve").await;
    app.create_character(&other, "刘备").await;
    app.stop().await;
}

/// Every write that ends or hands back an attempt adds that attempt's meter once, in either
/// store; a claim that was lost adds nothing (the store-level contract the e2e flows rely on).
#[tokio::test]
async fn each_attempt_adds_its_usage_once_and_a_lost_claim_adds_nothing() {
    use fastnpc_shared::{
        ids::{JobId, UserId},
        jobs::{JobError, JobKind},
        llm::Usage,
        store::jobs::NewJob,
    };

    // No workers: the test claims by hand.
    let app = TestApp::builder().workers(0).spawn().await;
    let ada = app.user("ada").await;
    let me: Value = app.get("/v1/me", &ada).await.json().await.unwrap();
    let user_id = UserId(me["user"]["id"].as_str().unwrap().parse().unwrap());
    let new_job = || NewJob {
        job_id: JobId::new(),
        user_id,
        kind: JobKind::CompressMemory,
        character_id: None,
        message_id: None,
        group_id: None,
        serial_key: None,
        progress_total: 0,
        idempotency: None,
        params: None,
    };
    let store = &app.store;
    let lease = Duration::from_secs(30);
    let usage_of_job = async |job_id: JobId| store.job(user_id, job_id).await.unwrap().unwrap().usage;

    // Handed back, then failed: both attempts count.
    let job = new_job();
    let failing = job.job_id;
    store.insert_job(job).await.unwrap();
    let first = store.claim_job(failing, lease).await.unwrap().unwrap();
    first.usage.add(Usage::call(100, 10));
    assert!(store.release_job(&first).await.unwrap());
    let second = store.claim_job(failing, lease).await.unwrap().unwrap();
    second.usage.add(Usage::call(200, 20));
    second.usage.add(Usage::call(300, 30));
    assert!(store.fail_job(&second, &JobError::new("x", "y")).await.unwrap());
    assert_eq!(usage_of_job(failing).await, Usage { calls: 3, prompt_tokens: 600, completion_tokens: 60 });
    // Written once: a second end of the same attempt is refused and adds nothing.
    assert!(!store.fail_job(&second, &JobError::new("x", "y")).await.unwrap());

    // A stalled attempt whose job was taken over adds nothing; the one that took over does.
    let job = new_job();
    let cancelled = job.job_id;
    store.insert_job(job).await.unwrap();
    let stalled = store.claim_job(cancelled, Duration::ZERO).await.unwrap().unwrap();
    stalled.usage.add(Usage::call(5000, 500));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken_over = store.claim_job(cancelled, lease).await.unwrap().unwrap();
    assert!(!store.succeed_job(&stalled, &json!({})).await.unwrap());
    assert!(!store.release_job(&stalled).await.unwrap());
    taken_over.usage.add(Usage::call(1, 2));
    assert!(store.cancel_claimed_job(&taken_over, &json!({"stopped": "cancelled"})).await.unwrap());
    assert_eq!(usage_of_job(cancelled).await, Usage::call(1, 2));

    // And one that succeeds.
    let job = new_job();
    let succeeding = job.job_id;
    store.insert_job(job).await.unwrap();
    let claim = store.claim_job(succeeding, lease).await.unwrap().unwrap();
    claim.usage.add(Usage::call(4, 4));
    assert!(store.succeed_job(&claim, &json!({})).await.unwrap());

    let (_, usage) = usage_of(&app, &ada, "?days=1").await;
    assert_eq!(counts(&usage["total"]), (3 + 1 + 1, 600 + 1 + 4, 60 + 2 + 4), "{usage}");
    assert_eq!(app.store.tokens_today(user_id).await.unwrap(), 660 + 3 + 8);
    app.stop().await;
}

/// A burst's replies finish together, and the Postgres store writes the finishes that arrive
/// while a round runs in one statement. Each must still store its own reply once and add its own
/// usage; one whose claim was lost, in the middle of them, must store and add nothing.
#[tokio::test]
async fn replies_finished_together_store_each_once_and_a_lost_claim_stores_nothing() {
    use fastnpc_shared::{
        ids::{CharacterId, MessageId, UserId},
        jobs::JobStatus,
        llm::Usage,
        store::{jobs::Claim, messages::NewReply},
    };

    // No workers: the test claims and finishes by hand, as a worker does.
    let app = TestApp::builder().workers(0).spawn().await;
    let ada = app.user("ada").await;
    let me: Value = app.get("/v1/me", &ada).await.json().await.unwrap();
    let user_id = UserId(me["user"]["id"].as_str().unwrap().parse().unwrap());
    let store = &app.store;
    let lease = Duration::from_secs(30);

    let mut claims = Vec::new();
    for n in 0..10u64 {
        let card = json!({"spec": "chara_card_v2", "spec_version": "2.0",
                          "data": {"name": format!("角色{n}"), "description": "一位用来测试的角色。"}});
        let response = app.request(Method::POST, "/v1/characters/import", Some(&ada)).json(&card).send().await.unwrap();
        assert_eq!(response.status(), 201, "import");
        let imported: Value = response.json().await.unwrap();
        let character_id: CharacterId = imported["character"]["id"].as_str().unwrap().parse().unwrap();
        let job_id = app.store_message(user_id, character_id, &format!("问题{n}")).await;
        claims.push(store.claim_job(job_id, lease).await.unwrap().expect("claimable"));
    }
    // The third job's first attempt stalled and was taken over: its late finish must lose.
    let taken = claims[2].job_id;
    store.release_job(&claims[2]).await.unwrap();
    let stalled = store.claim_job(taken, Duration::ZERO).await.unwrap().expect("claimable again");
    stalled.usage.add(Usage::call(5000, 500));
    tokio::time::sleep(Duration::from_millis(20)).await;
    claims[2] = store.claim_job(taken, lease).await.unwrap().expect("taken over");
    for (n, claim) in (1..).zip(&claims) {
        claim.usage.add(Usage::call(10 * n, n));
    }
    // Finished after the others, in a round of their own: the third's reply is refused by the
    // database (its id is taken), and must fail alone.
    let late = claims.split_off(6);
    fn reply<'a>(claim: &Claim, content: &'a str) -> NewReply<'a> {
        NewReply {
            message_id: MessageId::new(),
            user_id: claim.user_id,
            character_id: claim.character_id.unwrap(),
            reply_to: claim.message_id.unwrap(),
            content,
            job_id: claim.job_id,
            prompt_snapshot: "p",
            truncated: false,
            prompt_version: None,
            created_at: fastnpc_shared::store::stamp(),
        }
    }
    let contents: Vec<String> = claims.iter().map(|claim| format!("回答 {}", claim.job_id)).collect();
    let results: Vec<Value> = claims.iter().map(|claim| json!({"by": claim.attempt})).collect();
    let stalled_result = json!({"by": "stalled"});
    let mut finishing: Vec<_> = claims
        .iter()
        .zip(&contents)
        .zip(&results)
        .map(|((claim, content), result)| store.finish_reply(claim, reply(claim, content), result))
        .collect();
    finishing.insert(3, store.finish_reply(&stalled, reply(&stalled, "迟到的回答"), &stalled_result));
    let mut stored: Vec<_> = futures::future::join_all(finishing).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(stored.remove(3), None, "the stalled attempt's finish lost");
    for ((claim, content), stored) in claims.iter().zip(&contents).zip(&stored) {
        let message_chars = "问题0".chars().count() as i64;
        assert_eq!(
            stored.map(|stored| stored.session_chars),
            Some(message_chars + content.chars().count() as i64),
            "the session of {}: its message and its reply",
            claim.job_id
        );
        let reply = store.reply_of_job(claim.job_id).await.unwrap().expect("the reply is stored");
        assert_eq!(&reply.content, content, "each job stored its own reply");
        let job = store.job(user_id, claim.job_id).await.unwrap().unwrap();
        assert_eq!(job.usage, claim.usage.total(), "each job counts its own attempt");
        assert_eq!(job.result.unwrap()["by"], claim.attempt);
    }
    let history: Value = app
        .get(&format!("/v1/characters/{}/messages", claims[2].character_id.unwrap()), &ada)
        .await
        .json()
        .await
        .unwrap();
    let lines: Vec<&str> =
        history["items"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(
        lines,
        vec![contents[2].as_str(), "问题2"],
        "one reply to the taken-over job, none from the stalled attempt"
    );

    let late_contents: Vec<String> = late.iter().map(|claim| format!("回答 {}", claim.job_id)).collect();
    let mut late_replies: Vec<NewReply<'_>> = late.iter().zip(&late_contents).map(|(c, text)| reply(c, text)).collect();
    late_replies[2].message_id = late[2].message_id.unwrap();
    let empty = json!({});
    let finished = futures::future::join_all(
        late.iter().zip(late_replies).map(|(claim, reply)| store.finish_reply(claim, reply, &empty)),
    )
    .await;
    for ((claim, content), finished) in late.iter().zip(&late_contents).zip(finished) {
        let stored = store.reply_of_job(claim.job_id).await.unwrap();
        if claim.job_id == late[2].job_id {
            assert!(finished.is_err(), "the refused reply fails");
            assert!(stored.is_none());
            let unfinished = store.job(user_id, claim.job_id).await.unwrap().unwrap();
            assert_eq!(unfinished.status, JobStatus::Running, "the refused finish wrote nothing");
        } else {
            assert!(finished.unwrap().is_some(), "a reply finished beside the refused one is stored");
            assert_eq!(stored.map(|reply| reply.content).as_ref(), Some(content));
        }
    }
    let spent: u64 = (1..=10u64).filter(|&n| n != 9).map(|n| 10 * n + n).sum();
    assert_eq!(store.tokens_today(user_id).await.unwrap(), spent, "every finished attempt's tokens, once");
    app.stop().await;
}
