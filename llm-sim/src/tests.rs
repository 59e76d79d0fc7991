//! The simulator seen from a real HTTP client, the way the worker sees it.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};

use super::*;

/// No latency, short replies: most tests only care about what is said.
fn fast() -> SimConfig {
    SimConfig { reply_tokens: 16, ..SimConfig::instant() }
}

async fn start(config: SimConfig) -> LlmSimulator {
    LlmSimulator::start(config).await.expect("simulator starts")
}

fn chat(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "You are a village elder."},
            {"role": "user", "content": prompt},
        ],
        "stream": stream,
        "temperature": 0.7,
        "some_unknown_field": {"ignored": true},
    })
}

async fn post(sim: &LlmSimulator, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", sim.base_url()))
        .bearer_auth("sk-test")
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// The `data:` payloads of an SSE body, in order.
async fn sse_events(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.expect("stream completes");
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").expect("data event").to_owned())
        .collect()
}

/// Concatenated delta contents of parsed chunks; panics on a chunk that is not JSON.
fn deltas(events: &[String]) -> String {
    events
        .iter()
        .filter(|event| *event != "[DONE]")
        .map(|event| serde_json::from_str::<Value>(event).expect("chunk is JSON"))
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

async fn content_of(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("JSON body");
    body["choices"][0]["message"]["content"].as_str().expect("content").to_owned()
}

#[tokio::test]
async fn non_stream_reply_is_an_openai_completion() {
    let sim = start(fast()).await;
    let response = post(&sim, &chat("Hello 你好", false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "chatcmpl-sim-0");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "test-model");
    assert!(body["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty() && !content.contains('\n'));
    assert_eq!(body["usage"]["completion_tokens"], 16);
    let usage = &body["usage"];
    assert_eq!(usage["total_tokens"].as_u64(), Some(usage["prompt_tokens"].as_u64().unwrap() + 16));

    let stats = sim.stats();
    assert_eq!((stats.requests_received, stats.requests_served, stats.in_flight), (1, 1, 0));
    assert_eq!(
        (stats.prompt_tokens_reported, stats.completion_tokens_reported),
        (usage["prompt_tokens"].as_u64().unwrap(), 16),
        "what the answer reported is counted"
    );
    let recorded = sim.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].model, "test-model");
    assert!(!recorded[0].stream);
    assert_eq!(recorded[0].prompt_text, "You are a village elder.\nHello 你好");
    assert_eq!(recorded[0].authorization.as_deref(), Some("sk-test"));
    assert_eq!(recorded[0].body["temperature"], 0.7);
}

#[tokio::test]
async fn stream_reassembles_to_the_non_stream_reply() {
    let sim = start(SimConfig { tokens_per_chunk: 3, seed: 42, ..fast() }).await;
    let plain = content_of(post(&sim, &chat("hi", false)).await).await;

    // Same seed and request index after a reset: the same reply, streamed.
    sim.reset();
    let mut request = chat("hi", true);
    request["stream_options"] = json!({"include_usage": true});
    let events = sse_events(post(&sim, &request).await).await;
    assert_eq!(deltas(&events), plain);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|event| serde_json::from_str(event).unwrap()).collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    // 16 tokens in chunks of 3, then the stop chunk and the usage chunk.
    assert_eq!(chunks.len(), 6 + 2);
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[7]["usage"]["completion_tokens"], 16);

    let stats = sim.stats();
    assert_eq!((stats.streamed, stats.requests_served), (1, 1));
    assert_eq!(stats.completion_tokens_reported, 16, "the usage chunk is counted");
    // A stream that was not asked for usage reports none.
    sim.reset();
    sse_events(post(&sim, &chat("hi", true)).await).await;
    assert_eq!((sim.stats().requests_served, sim.stats().completion_tokens_reported), (1, 0));
}

/// Checks that `value` has every property `schema` declares, recursively, and the right
/// primitive types.
fn assert_fills(value: &Value, schema: &Value, root: &Value) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => root.pointer(&reference[1..]).expect("ref resolves"),
        None => schema,
    };
    if let Some(options) = schema.get("enum") {
        assert!(options.as_array().unwrap().contains(value), "{value} not in {options}");
    }
    match schema["type"].as_str() {
        Some("object") => {
            let object = value.as_object().expect("object");
            let properties = schema["properties"].as_object().unwrap();
            assert_eq!(object.len(), properties.len(), "{value}");
            for (name, property) in properties {
                assert_fills(&object[name], property, root);
            }
        }
        Some("array") => {
            let items = value.as_array().expect("array");
            assert!(!items.is_empty() && items.len() <= 3);
            for item in items {
                assert_fills(item, &schema["items"], root);
            }
        }
        Some("string") => assert!(value.is_string(), "{value}"),
        Some("integer") => assert!(value.is_i64(), "{value}"),
        Some("number") => assert!(value.is_number(), "{value}"),
        Some("boolean") => assert!(value.is_boolean(), "{value}"),
        other => panic!("unexpected type {other:?}"),
    }
}

#[tokio::test]
async fn json_schema_reply_fills_every_property() {
    let schema = json!({
        "type": "object",
        "$defs": {
            "relation": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 8},
                    "closeness": {"type": "integer", "minimum": 1, "maximum": 5},
                },
                "required": ["name"],
                "additionalProperties": false,
            }
        },
        "properties": {
            "identity": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": "integer", "minimum": 18, "maximum": 90},
                    "alive": {"type": "boolean"},
                },
                "additionalProperties": false,
            },
            "experiences": {"type": "array", "items": {"type": "string"}},
            "relations": {"type": "array", "items": {"$ref": "#/$defs/relation"}, "maxItems": 2},
            "mood": {"type": "string", "enum": ["calm", "angry", "平静"]},
            "height": {"type": "number"},
        },
        "required": ["identity"],
        "additionalProperties": false,
    });
    let sim = start(fast()).await;
    let mut request = chat("describe", false);
    request["response_format"] = json!({
        "type": "json_schema",
        "json_schema": {"name": "persona", "strict": true, "schema": schema},
    });
    for stream in [false, true] {
        request["stream"] = json!(stream);
        let response = post(&sim, &request).await;
        let content = if stream { deltas(&sse_events(response).await) } else { content_of(response).await };
        let value: Value = serde_json::from_str(&content).expect("reply is JSON");
        assert_fills(&value, &schema, &schema);
    }

    request["response_format"] = json!({"type": "json_object"});
    request["stream"] = json!(false);
    let content = content_of(post(&sim, &request).await).await;
    let value: Value = serde_json::from_str(&content).unwrap();
    assert!(value["reply"].as_str().is_some_and(|reply| !reply.is_empty()));
    assert_eq!(sim.stats().json_mode, 3);
}

#[tokio::test]
async fn rate_limit_has_retry_after_and_a_numeric_code() {
    let sim = start(fast()).await;
    sim.push_faults([Fault::RateLimited { retry_after: Duration::from_millis(1500) }, Fault::ServerError]);

    let response = post(&sim, &chat("hi", false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"].as_u64(), Some(429));
    assert!(body["error"]["message"].is_string());

    let response = post(&sim, &chat("hi", true)).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"].as_u64(), Some(500));

    // The queue is drained: back to normal.
    assert_eq!(post(&sim, &chat("hi", false)).await.status(), 200);
    let stats = sim.stats();
    assert_eq!((stats.requests_received, stats.requests_faulted, stats.requests_served), (3, 2, 1));
}

#[tokio::test]
async fn dropped_connection_is_an_error_not_a_clean_end() {
    let sim = start(fast()).await;
    sim.push_faults([Fault::DropConnection, Fault::DropConnection]);

    let response = post(&sim, &chat("hi", true)).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::new();
    let error = loop {
        match body.next().await {
            Some(Ok(bytes)) => received.extend_from_slice(&bytes),
            Some(Err(error)) => break error,
            None => panic!("stream ended cleanly after {received:?}"),
        }
    };
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    let received = String::from_utf8(received).unwrap();
    assert!(received.starts_with("data: {") && !received.contains("[DONE]"));

    let response = post(&sim, &chat("hi", false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());

    let stats = sim.stats();
    assert_eq!((stats.requests_faulted, stats.requests_served), (2, 0));
}

#[tokio::test]
async fn malformed_and_error_chunks_look_like_openrouter() {
    let sim = start(fast()).await;
    sim.push_faults([Fault::MalformedChunk, Fault::MidStreamError]);

    // A bad chunk mid-stream, and then the stream carries on to [DONE].
    let events = sse_events(post(&sim, &chat("hi", true)).await).await;
    assert!(events.iter().any(|event| event == "{not json"));
    assert_eq!(events.last().unwrap(), "[DONE]");

    // An error object on a 200, and no [DONE].
    let events = sse_events(post(&sim, &chat("hi", true)).await).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"].as_u64(), Some(502));
    assert!(events.len() >= 2 && !events.contains(&"[DONE]".to_owned()));

    sim.push_faults([Fault::MalformedChunk, Fault::MidStreamError, Fault::InvalidJson]);
    let response = post(&sim, &chat("hi", false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.is_err());
    let response = post(&sim, &chat("hi", false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"].as_u64(), Some(502));
    let content = content_of(post(&sim, &chat("hi", false)).await).await;
    assert!(serde_json::from_str::<Value>(&content).is_err());
    assert_eq!(sim.stats().requests_faulted, 5);
}

#[tokio::test]
async fn stall_trips_a_client_timeout() {
    let sim = start(fast()).await;
    sim.push_faults([Fault::Stall(Duration::from_millis(400))]);
    let client = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    let error =
        client.post(format!("{}/chat/completions", sim.base_url())).json(&chat("hi", false)).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
}

#[tokio::test]
async fn rules_match_prompts_before_the_queue() {
    let sim = start(fast()).await;
    sim.add_rule(Rule {
        when_contains: "MODERATOR".into(),
        fault: Fault::Reply("{\"next\":\"李白\"}\nline two".into()),
        times: None,
    });
    sim.add_rule(Rule { when_contains: "category: background".into(), fault: Fault::ServerError, times: Some(2) });
    sim.push_faults([Fault::ServerError]);

    for _ in 0..2 {
        let events = sse_events(post(&sim, &chat("MODERATOR: who speaks?", true)).await).await;
        assert_eq!(deltas(&events), "{\"next\":\"李白\"}\nline two");
    }
    for _ in 0..2 {
        let response = post(&sim, &chat("category: background", false)).await;
        assert_eq!(response.status(), 500);
    }
    // The rule is used up; the queued fault is still waiting for the next unmatched request.
    let response = post(&sim, &chat("category: background", false)).await;
    assert_eq!(response.status(), 500);
    assert_eq!(post(&sim, &chat("category: background", false)).await.status(), 200);

    let stats = sim.stats();
    assert_eq!((stats.requests_served, stats.requests_faulted), (3, 3));
}

#[tokio::test]
async fn peak_in_flight_counts_concurrent_requests() {
    let sim = start(SimConfig { time_to_first_token: Duration::from_millis(200), ..fast() }).await;
    let requests: Vec<Value> = (0..10).map(|i| chat(&format!("request {i}"), i % 2 == 0)).collect();
    let responses = futures::future::join_all(requests.iter().map(|request| post(&sim, request))).await;
    for response in responses {
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    let stats = sim.stats();
    assert_eq!(stats.peak_in_flight, 10);
    assert_eq!(stats.requests_received, 10);
}

#[tokio::test]
async fn control_api_drives_a_separate_process() {
    let sim = start(fast()).await;
    let base = format!("http://{}", sim.addr());
    let client = reqwest::Client::new();

    let models: Value = client.get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "sim-model");

    let queued: Value = client
        .post(format!("{base}/sim/faults"))
        .body(r#"[{"kind":"rate_limited","retry_after_ms":1000},{"kind":"reply","content":"scripted"}]"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(queued["queued"], 2);
    let config: SimConfig = client
        .put(format!("{base}/sim/config"))
        .body(r#"{"reply_tokens": 3, "seed": 9}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config, SimConfig { reply_tokens: 3, seed: 9, ..fast() });
    assert_eq!(sim.config(), config);

    let response = post(&sim, &chat("hi", false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(content_of(post(&sim, &chat("hi", false)).await).await, "scripted");
    let body: Value = post(&sim, &chat("hi", false)).await.json().await.unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 3);

    let bad = post(&sim, &json!({"model": "m"})).await;
    assert_eq!(bad.status(), 400);

    let stats: SimStats = client.get(format!("{base}/sim/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats, sim.stats());
    assert_eq!((stats.requests_received, stats.requests_served, stats.requests_faulted), (4, 2, 1));

    let reset = client.post(format!("{base}/sim/reset")).send().await.unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(sim.stats(), SimStats::default());
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn dropping_the_simulator_stops_the_server() {
    let sim = start(fast()).await;
    let url = format!("{}/models", sim.base_url());
    assert!(reqwest::get(&url).await.unwrap().status().is_success());
    sim.shutdown().await;
    assert!(reqwest::get(&url).await.is_err());
}

#[tokio::test]
async fn the_llama_cpp_python_dialect_refuses_json_schema_and_honours_json_object_with_a_schema() {
    let sim = start(SimConfig { dialect: Dialect::LlamaCppPython, ..fast() }).await;
    let schema = json!({"type": "object", "properties": {"mood": {"type": "string"}}, "required": ["mood"]});
    let mut request = chat("describe", false);
    request["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}});
    let refused = post(&sim, &request).await;
    assert_eq!(refused.status(), 500);
    let body = refused.text().await.unwrap();
    assert!(body.contains("response_format") && body.contains("'text' or 'json_object'"), "{body}");

    request["response_format"] = json!({"type": "json_object", "schema": schema});
    let value: Value = serde_json::from_str(&content_of(post(&sim, &request).await).await).unwrap();
    assert!(value["mood"].is_string(), "{value}");

    // Streams: a keep-alive comment and a role-only chunk first, no usage even when asked.
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let text = post(&sim, &request).await.text().await.unwrap();
    assert!(text.starts_with(": ping - "), "{text}");
    let first = text.split("\n\n").nth(1).unwrap().strip_prefix("data: ").unwrap();
    assert_eq!(serde_json::from_str::<Value>(first).unwrap()["choices"][0]["delta"], json!({"role": "assistant"}));
    assert!(text.ends_with("data: [DONE]\n\n") && !text.contains("\"usage\""), "{text}");
}

#[tokio::test]
async fn max_tokens_cuts_the_reply_and_says_so() {
    let sim = start(fast()).await;
    let mut request = chat("talk", false);
    request["max_tokens"] = json!(5);
    let body: Value = post(&sim, &request).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 5);
    request["stream"] = json!(true);
    let events = sse_events(post(&sim, &request).await).await;
    assert!(events.iter().any(|e| e.contains(r#""finish_reason":"length""#)), "{events:?}");
    request["max_tokens"] = json!(500);
    request["stream"] = json!(false);
    let body: Value = post(&sim, &request).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

/// Polls the simulator until `condition` holds; a generous hang guard turns "never" into a
/// failure.
async fn until_stats(sim: &LlmSimulator, what: &str, condition: impl Fn(&SimStats) -> bool) {
    let poll = async {
        while !condition(&sim.stats()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), poll).await.unwrap_or_else(|_| panic!("{what}: {:?}", sim.stats()));
}

#[tokio::test]
async fn a_client_that_goes_away_releases_its_in_flight_slot() {
    // Ten minutes to the first token: only the client leaving can end these requests in time.
    let sim = start(SimConfig { time_to_first_token: Duration::from_secs(600), ..fast() }).await;

    // Streamed, waiting for its first token: the head is out and the body is idle, so the server
    // has nothing to write that could fail; it must notice the closed connection by itself.
    let streamed = post(&sim, &chat("slow stream", true)).await;
    assert_eq!(streamed.status(), 200);
    assert_eq!(sim.stats().in_flight, 1, "the stream is in flight");
    drop(streamed);
    until_stats(&sim, "the dropped stream is no longer in flight", |s| s.in_flight == 0).await;

    // Not streamed: the client gives up before any byte of the answer (the handler is waiting).
    let request = tokio::spawn({
        let url = format!("{}/chat/completions", sim.base_url());
        async move { reqwest::Client::new().post(url).json(&chat("slow answer", false)).send().await }
    });
    until_stats(&sim, "the answer is in flight", |s| s.in_flight == 1).await;
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    until_stats(&sim, "the abandoned answer is no longer in flight", |s| s.in_flight == 0).await;

    // Mid-stream: tokens were flowing, a long wait for the next one, and the client leaves.
    sim.set_config(SimConfig { inter_token_delay: Duration::from_secs(600), ..fast() });
    let response = post(&sim, &chat("slow tokens", true)).await;
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a first chunk").unwrap();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    assert_eq!(sim.stats().in_flight, 1);
    drop(body);
    until_stats(&sim, "the half-read stream is no longer in flight", |s| s.in_flight == 0).await;

    let stats = sim.stats();
    assert_eq!((stats.requests_received, stats.requests_served, stats.peak_in_flight), (3, 0, 1), "{stats:?}");
}

#[tokio::test]
async fn in_flight_counts_until_the_last_byte_and_not_after() {
    let sim = start(SimConfig { inter_token_delay: Duration::from_millis(20), ..fast() }).await;
    let response = post(&sim, &chat("hi", true)).await;
    assert_eq!(sim.stats().in_flight, 1, "the stream is in flight while its tokens come");
    sse_events(response).await;
    until_stats(&sim, "a finished stream leaves nothing in flight", |s| s.in_flight == 0).await;
    content_of(post(&sim, &chat("hi", false)).await).await;
    let stats = sim.stats();
    assert_eq!((stats.in_flight, stats.requests_served), (0, 2));
}
