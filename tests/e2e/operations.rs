//! What operators rely on. Prometheus metrics, scraped as Prometheus would
//! (`FASTNPC_METRICS_ADDR`, a listener of its own) and read with a real exposition parser
//! (`prometheus-parse`): after one character and one chat reply, the counters moved by exactly
//! what was done, in both modes. The container healthcheck (`fastnpc-api healthcheck`).

use std::collections::HashMap;

use fastnpc_tests::harness::TestApp;
use openmetrics_parser::{OpenMetricsValue, openmetrics::parse_openmetrics};
use serde_json::Value;

/// One series: its family's name, its labels, and its number (a counter's or gauge's value, a
/// histogram's count).
pub(crate) struct Series {
    family: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Every process part's series (the API's and each worker's, or the embedded process's), parsed
/// by a strict OpenMetrics parser.
pub(crate) async fn scrape(app: &TestApp) -> Vec<Series> {
    assert!(!app.metrics_urls.is_empty(), "the test app serves metrics");
    let mut series = Vec::new();
    for url in &app.metrics_urls {
        let response = app.http.get(url).send().await.expect("metrics are served");
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"),
            "{url}"
        );
        let text = response.text().await.unwrap();
        let exposition = parse_openmetrics(&text).unwrap_or_else(|error| panic!("{url}: {error:?}\n{text}"));
        for (name, family) in exposition.families {
            let label_names = family.get_label_names().to_vec();
            for sample in family.iter_samples() {
                let labels = sample.get_labelset().expect("a sample's labels");
                let labels = label_names
                    .iter()
                    .filter_map(|name| Some((name.clone(), labels.get_label_value(name)?.to_owned())))
                    .collect();
                let value = match &sample.value {
                    OpenMetricsValue::Counter(counter) => counter.value.as_f64(),
                    OpenMetricsValue::Gauge(gauge) => gauge.as_f64(),
                    OpenMetricsValue::Histogram(histogram) => histogram.count.unwrap_or_default() as f64,
                    other => panic!("{name}: an unexpected kind of metric {other:?}"),
                };
                series.push(Series { family: name.clone(), labels, value });
            }
        }
    }
    series
}

/// The sum over the series of family `name` whose labels include `labels`.
pub(crate) fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> f64 {
    series
        .iter()
        .filter(|s| {
            s.family == name && labels.iter().all(|(key, value)| s.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test]
async fn after_a_character_and_a_chat_the_counters_moved_by_exactly_what_was_done() {
    let app = TestApp::spawn().await;
    let user = app.user("operator").await;
    let before = scrape(&app).await;
    assert_eq!(value(&before, "fastnpc_jobs_accepted", &[]), 0.0, "a fresh app has done nothing");

    let character = app.ready_character(&user, "诸葛亮").await;
    let reply = app.send_message(&user, &character, "先生以为天下大势如何？", Some(30)).await;
    assert_eq!(reply.status(), 200, "the reply within the wait");
    app.wait_until_no_pending("chat_reply").await;
    app.wait_until_no_pending("compress_memory").await;
    let usage: Value = app.get("/v1/me/usage", &user).await.json().await.unwrap();
    let samples = scrape(&app).await;
    let get = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);

    for kind in ["generate_character", "chat_reply"] {
        assert_eq!(get("fastnpc_jobs_accepted", &[("kind", kind)]), 1.0, "{kind} accepted");
        assert_eq!(get("fastnpc_jobs_started", &[("kind", kind)]), 1.0, "{kind} started");
        assert_eq!(get("fastnpc_jobs_finished", &[("kind", kind), ("outcome", "succeeded")]), 1.0, "{kind}");
        assert_eq!(get("fastnpc_jobs_finished", &[("kind", kind)]), 1.0, "{kind}: no other outcome");
        assert_eq!(get("fastnpc_jobs_in_flight", &[("kind", kind)]), 0.0, "{kind} no longer running");
        assert_eq!(get("fastnpc_job_duration_seconds", &[("kind", kind)]), 1.0, "{kind} timed");
        assert_eq!(get("fastnpc_job_queue_wait_seconds", &[("kind", kind)]), 1.0, "{kind} queue wait");
    }
    assert_eq!(get("fastnpc_llm_calls", &[("purpose", "profile_category"), ("outcome", "ok")]), 9.0);
    assert_eq!(get("fastnpc_llm_calls", &[("purpose", "brief"), ("outcome", "ok")]), 1.0);
    assert_eq!(get("fastnpc_llm_calls", &[("purpose", "chat_reply"), ("outcome", "ok")]), 1.0);
    let calls = usage["total"]["calls"].as_f64().unwrap();
    assert_eq!(get("fastnpc_llm_calls", &[]), calls, "every call the usage records: {usage}");
    assert_eq!(get("fastnpc_llm_call_duration_seconds", &[]), calls);
    assert_eq!(get("fastnpc_llm_first_token_seconds", &[("purpose", "chat_reply")]), 1.0, "the reply streamed");
    assert_eq!(
        get("fastnpc_llm_tokens", &[("direction", "prompt")]),
        usage["total"]["prompt_tokens"].as_f64().unwrap(),
        "prompt tokens as the usage records them"
    );
    assert_eq!(
        get("fastnpc_llm_tokens", &[("direction", "completion")]),
        usage["total"]["completion_tokens"].as_f64().unwrap()
    );
    let created = [("method", "POST"), ("route", "/v1/characters"), ("status", "202")];
    assert_eq!(get("fastnpc_http_requests", &created), 1.0);
    let sent = [("method", "POST"), ("route", "/v1/characters/{id}/messages"), ("status", "200")];
    assert_eq!(get("fastnpc_http_requests", &sent), 1.0);
    assert!(get("fastnpc_http_request_duration_seconds", &[("route", "/v1/jobs/{id}")]) >= 1.0, "polls timed");
    assert!(
        samples.iter().filter(|s| s.family == "fastnpc_http_requests").all(|s| !s.labels["route"].contains('-')),
        "routes are templates, never ids"
    );
    assert!(get("fastnpc_event_append_duration_seconds", &[]) >= 11.0, "running, 9 progress, succeeded");
    assert_eq!(get("fastnpc_sse_streams", &[]), 0.0);
    assert_eq!(get("fastnpc_dead_lettered_messages", &[]), 0.0);
    app.stop().await;
}

#[tokio::test]
async fn the_healthcheck_command_succeeds_against_a_ready_api_and_fails_without_one() {
    const API: &str = env!("CARGO_BIN_EXE_fastnpc-test-api");
    let app = TestApp::spawn().await;
    let healthcheck = |address: String| {
        let env = app.env.clone();
        // A child process, waited for off the async threads.
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(API)
                .arg("healthcheck")
                .env_clear()
                .envs(env)
                .env("FASTNPC_HTTP_ADDR", address)
                .env("RUST_LOG", "error")
                .output()
                .expect("the binary runs")
        })
    };
    let port = app.api_url.rsplit(':').next().unwrap().to_owned();
    let ready = healthcheck(format!("0.0.0.0:{port}")).await.unwrap();
    assert!(ready.status.success(), "ready: {}", String::from_utf8_lossy(&ready.stderr));
    let closed = healthcheck("127.0.0.1:9".to_owned()).await.unwrap();
    assert!(!closed.status.success(), "nothing listens on port 9, so the check fails");
    app.stop().await;
}

#[test]
fn every_binary_explains_itself_and_refuses_what_it_does_not_know() {
    let run = |binary: &str, args: &[&str]| {
        let output = std::process::Command::new(binary).args(args).output().expect("the binary runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    for (binary, commands) in [
        (env!("CARGO_BIN_EXE_fastnpc-test-api"), &["serve", "migrate", "healthcheck"][..]),
        (env!("CARGO_BIN_EXE_fastnpc-test-worker"), &["run", "dead-letters"][..]),
        (env!("CARGO_BIN_EXE_fastnpc-embedded"), &["serve", "export", "import", "eval"][..]),
    ] {
        let (code, help, _) = run(binary, &["--help"]);
        assert_eq!(code, Some(0), "{binary} --help");
        for command in commands {
            assert!(help.contains(command), "{binary} --help lists {command}: {help}");
        }
        // No settings are read before the arguments: a bad argument is a usage error (2), not a
        // configuration one.
        let (code, _, stderr) = run(binary, &["frobnicate"]);
        assert_eq!(code, Some(2), "{binary} frobnicate: {stderr}");
        assert!(stderr.contains("Usage:"), "{stderr}");
    }
    let (code, _, stderr) = run(env!("CARGO_BIN_EXE_fastnpc-test-worker"), &["dead-letters", "requeue", "not-a-job"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("invalid value 'not-a-job'"), "{stderr}");
}
