//! The job event stream: resumption without gaps or duplicates.

use std::time::Duration;

use fastnpc_tests::{harness::TestApp, sim::SimConfig};
use futures::StreamExt;

#[tokio::test]
async fn a_client_that_reconnects_with_last_event_id_gets_every_later_event_once() {
    // Slow calls, so the job is still running when the client drops.
    let app = TestApp::builder()
        .sim(SimConfig {
            time_to_first_token: Duration::from_millis(100),
            inter_token_delay: Duration::from_millis(20),
            ..SimConfig::default()
        })
        .spawn()
        .await;
    let user = app.user("ada").await;
    let created = app.create_character(&user, "诸葛亮").await;
    let job_id = created["job"]["id"].as_str().unwrap();

    // Read until the first progress event, then hang up mid-stream.
    let mut first = Vec::new();
    {
        let mut stream = app.open_events(&user, job_id, None).await;
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            let is_progress = event.event == "progress";
            first.push(event);
            if is_progress {
                break;
            }
        }
    }
    let last_seen = first.last().unwrap().id.unwrap();
    assert!(first.iter().all(|e| !["succeeded", "failed"].contains(&e.event.as_str())), "disconnected mid-job");

    let rest = app.collect_events(&user, job_id, Some(last_seen)).await;
    assert_eq!(rest.first().unwrap().id, Some(last_seen + 1), "resumes right after the last seen event");
    let mut all: Vec<u64> = first.iter().chain(&rest).map(|e| e.id.unwrap()).collect();
    let total = all.len();
    all.dedup();
    assert_eq!(all.len(), total, "no event is delivered twice");
    assert_eq!(all, (1..=total as u64).collect::<Vec<_>>(), "no event is missing");
    assert_eq!(rest.last().unwrap().event, "succeeded");

    // The full log read afresh is the same sequence.
    let replay = app.collect_events(&user, job_id, None).await;
    assert_eq!(replay, first.into_iter().chain(rest).collect::<Vec<_>>());

    // `?after=N` resumes the same way as the header.
    let response = app.get(&format!("/v1/jobs/{job_id}/events?after={}", total - 1), &user).await;
    let tail: Vec<_> = fastnpc_tests::sse_client::events(response).collect().await;
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].as_ref().unwrap().event, "succeeded");
    app.stop().await;
}

#[tokio::test]
async fn an_event_stream_is_not_cut_by_the_request_timeout() {
    let app = TestApp::builder().setting("FASTNPC_HTTP_REQUEST_TIMEOUT_SECS", "1").spawn().await;
    // Not `app.user`: an argon2 hash can take longer than the 1 s timeout in a loaded debug build.
    let user = app.seeded_user("ada").await;
    let character = app.ready_character(&user, "诸葛亮").await;

    // The reply takes 3 s to start, three times the request timeout.
    app.sim.set_config(SimConfig { time_to_first_token: Duration::from_secs(3), ..app.sim.config() });
    let sent = app.send_message(&user, &character, "先生安好？", None).await;
    assert_eq!(sent.status(), 202);
    let sent: serde_json::Value = sent.json().await.unwrap();
    let started = std::time::Instant::now();
    let events = app.collect_events(&user, sent["job"]["id"].as_str().unwrap(), None).await;
    let elapsed = started.elapsed();
    assert_eq!(events.last().unwrap().event, "succeeded", "one stream, open to the end: {events:?}");
    assert!(elapsed > Duration::from_secs(2), "the stream stayed open past the 1 s timeout: {elapsed:?}");
    // An ordinary request of the same app is bounded and still answers.
    assert_eq!(app.get("/v1/me", &user).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn stream_responses_are_sse_with_proxy_buffering_off() {
    let app = TestApp::spawn().await;
    let user = app.user("grace").await;
    let created = app.create_character(&user, "李白").await;
    let job_id = created["job"]["id"].as_str().unwrap();
    let response = app.get(&format!("/v1/jobs/{job_id}/events"), &user).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    assert_eq!(response.headers()["cache-control"], "no-cache");

    let bad = app.get(&format!("/v1/jobs/{job_id}/events?after=-1"), &user).await;
    assert_eq!(bad.status(), 400);
    let bad = app
        .request(reqwest::Method::GET, &format!("/v1/jobs/{job_id}/events"), Some(&user))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn a_jobs_log_expires_a_day_after_its_first_event_and_an_hour_after_its_terminal_one() {
    use fastnpc_shared::{
        event_bus::{self, EventLog, RedisEventLog},
        events::EventPayload,
        ids::JobId,
        jobs::JobStatus,
    };
    use redis::AsyncCommands as _;
    let app = TestApp::builder().backend(fastnpc_tests::harness::Backend::Distributed).workers(0).spawn().await;
    let mut redis = event_bus::connect(&app.settings.redis_url).await.unwrap();
    let log = RedisEventLog::new(redis.clone(), &app.settings.namespace);
    let job_id = JobId::new();
    let pattern = format!("{}:job:{job_id}:*", app.settings.namespace);
    let mut ttls = async || {
        let keys: Vec<String> = redis.keys(&pattern).await.unwrap();
        assert_eq!(keys.len(), 3, "the counter, the stream and the append keys: {keys:?}");
        let mut ttls = Vec::new();
        for key in &keys {
            ttls.push(redis.ttl::<_, i64>(key).await.unwrap());
        }
        (keys, ttls)
    };

    log.append(job_id, &EventPayload::Status { status: JobStatus::Queued }).await.unwrap();
    let (keys, after_first) = ttls().await;
    assert!(after_first.iter().all(|ttl| (24 * 3600 - 60..=24 * 3600).contains(ttl)), "{after_first:?}");

    // Later events leave the expiry alone: shortened by hand, it stays short.
    let mut shorten = event_bus::connect(&app.settings.redis_url).await.unwrap();
    for key in &keys {
        let _: bool = shorten.expire(key, 1000).await.unwrap();
    }
    log.append(job_id, &EventPayload::Status { status: JobStatus::Running }).await.unwrap();
    log.append(job_id, &EventPayload::Token { text: "臣本布衣".into(), speaker: None }).await.unwrap();
    let (_, after_token) = ttls().await;
    assert!(after_token.iter().all(|ttl| (900..=1000).contains(ttl)), "{after_token:?}");

    // The terminal event gives the log its last hour.
    let result = serde_json::json!({"message_id": null});
    assert_eq!(log.append(job_id, &EventPayload::Succeeded { result }).await.unwrap(), 4);
    let (_, after_terminal) = ttls().await;
    assert!(after_terminal.iter().all(|ttl| (3600 - 60..=3600).contains(ttl)), "{after_terminal:?}");
    let events = log.read_after(job_id, 0).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.payload.event_type()).collect();
    assert_eq!(types, ["status", "status", "token", "succeeded"]);
    app.stop().await;
}
