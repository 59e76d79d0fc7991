//! The servers and models people really run: a server that refuses `json_schema`, a model that
//! wraps its JSON in prose and reasoning, a stream without usage or `[DONE]`, a reply cut at
//! `max_tokens`. (The same paths against a real local model: `real_llm`.)

use fastnpc_tests::{
    harness::TestApp,
    sim::{Dialect, Fault, Rule, SimConfig},
};
use serde_json::Value;

fn response_format_type(request: &fastnpc_tests::sim::RecordedRequest) -> Option<&str> {
    request.body.pointer("/response_format/type").and_then(Value::as_str)
}

#[tokio::test]
async fn a_server_that_refuses_json_schema_is_stepped_down_once_and_remembered() {
    let app =
        TestApp::builder().sim(SimConfig { dialect: Dialect::LlamaCppPython, ..SimConfig::instant() }).spawn().await;
    let user = app.user("ada").await;

    let first = app.ready_character(&user, "诸葛亮").await;
    let requests = app.sim.requests();
    let refused = requests.iter().filter(|r| response_format_type(r) == Some("json_schema")).count();
    // The nine category calls start together, so each may meet the refusal once before the
    // ladder steps; none is retried on json_schema after that.
    assert!((1..=9).contains(&refused), "{refused} json_schema requests");
    let json_object: Vec<_> = requests.iter().filter(|r| response_format_type(r) == Some("json_object")).collect();
    assert_eq!(json_object.len(), 9, "each category once on the working rung");
    for request in &json_object {
        assert!(request.body["response_format"]["schema"].is_object(), "the schema goes beside json_object");
        assert!(request.prompt_text.contains("Reply with one JSON object"), "and is described in the prompt");
    }

    let before = app.sim.requests().len();
    let second = app.create_character(&user, "李白").await;
    let job = app.wait_for_job(&user, second["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let later = &app.sim.requests()[before..];
    assert_eq!(later.len(), 10, "nine categories and the brief, no refused round-trip");
    assert!(later.iter().all(|r| response_format_type(r) != Some("json_schema")));

    // Chat over the same server: its stream opens with a keep-alive comment and a role-only
    // chunk and has no usage; one more ends without `[DONE]` after its finish reason.
    let sent: Value = app.send_message(&user, &first, "先生安好？", Some(30)).await.json().await.unwrap();
    assert_eq!(sent["job"]["status"], "succeeded", "{sent}");
    assert!(!sent["reply"]["content"].as_str().unwrap_or_default().is_empty(), "{sent}");
    app.sim.add_rule(Rule { when_contains: "没有结束标记".into(), fault: Fault::EndWithoutDone, times: None });
    let sent: Value = app.send_message(&user, &first, "没有结束标记", Some(30)).await.json().await.unwrap();
    assert_eq!(sent["job"]["status"], "succeeded", "{sent}");
    assert_eq!(sent["reply"]["truncated"], false, "a missing [DONE] is not a cut reply: {sent}");
    app.stop().await;
}

#[tokio::test]
async fn json_wrapped_in_reasoning_and_prose_is_read_and_a_wrong_reply_is_sent_back_with_the_reason() {
    let app = TestApp::builder().setting("FASTNPC_LLM_STRUCTURED_OUTPUT", "prompt").spawn().await;
    let user = app.user("grace").await;
    // Recorded-style replies: reasoning, prose, a fence, Chinese field labels, a trailing comma
    // and a string where a list belongs.
    app.sim.add_rule(Rule {
        when_contains: "「背景故事」".into(),
        fault: Fault::Reply(
            "<think>先想想出身。</think>好的，以下是JSON：\n```json\n{\"出身\": \"琅琊阳都\", \"experiences\": \"隆中对\", \
             \"current_situation\": \"丞相\", \"relationships\": [\"主公：刘备\"], \"secrets\": \"无\",}\n```"
                .into(),
        ),
        times: None,
    });
    // The knowledge category's first reply misses a field; the follow-up names it.
    app.sim.add_rule(Rule {
        when_contains: "「知识与能力」".into(),
        fault: Fault::Reply(r#"{"knowledge_domain": "兵法", "skills": "治国"}"#.into()),
        times: Some(1),
    });
    app.sim.add_rule(Rule {
        when_contains: "「知识与能力」".into(),
        fault: Fault::Reply(r#"{"knowledge_domain": "兵法", "skills": "治国", "limitations": "不知后世"}"#.into()),
        times: None,
    });
    // Every other category: a clean object (prompt mode gets free text from the simulator).
    for category in fastnpc_shared::domain::CATEGORIES.iter().filter(|c| !["background", "knowledge"].contains(&c.key))
    {
        let fields: serde_json::Map<String, Value> = category
            .fields
            .iter()
            .map(|f| (f.key.to_owned(), if f.list { serde_json::json!(["一"]) } else { Value::from("甲") }))
            .collect();
        app.sim.add_rule(Rule {
            when_contains: format!("「{}」", category.zh),
            fault: Fault::Reply(format!("Here you go: {}", Value::Object(fields))),
            times: None,
        });
    }

    let created = app.create_character(&user, "诸葛亮").await;
    let job = app.wait_for_job(&user, created["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let requests = app.sim.requests();
    assert!(requests.iter().all(|r| r.body.get("response_format").is_none()), "the prompt rung sends no format");
    let follow_up = requests
        .iter()
        .find(|r| r.prompt_text.contains("That reply cannot be used"))
        .expect("the refused reply went back to the model");
    assert!(follow_up.prompt_text.contains("field limitations is missing"), "{}", follow_up.prompt_text);

    let character: Value = app
        .get(&format!("/v1/characters/{}", created["character"]["id"].as_str().unwrap()), &user)
        .await
        .json()
        .await
        .unwrap();
    let background = &character["character"]["profile"]["background"];
    assert_eq!(background["origin"], "琅琊阳都");
    assert_eq!(background["experiences"], serde_json::json!(["隆中对"]));
    assert_eq!(character["character"]["profile"]["knowledge"]["limitations"], "不知后世");
    app.stop().await;
}

#[tokio::test]
async fn every_call_carries_the_output_budget_of_its_purpose() {
    let app = TestApp::builder()
        .setting("FASTNPC_LLM_MAX_TOKENS_PROFILE", "700")
        .setting("FASTNPC_LLM_MAX_TOKENS_BRIEF", "300")
        .setting("FASTNPC_LLM_MAX_TOKENS_CHAT", "5")
        .setting("FASTNPC_LLM_MODEL_CHAT", "chat-model")
        .spawn()
        .await;
    let user = app.user("linus").await;
    let character = app.ready_character(&user, "王勃").await;
    let budgets: Vec<u64> = app.sim.requests().iter().filter_map(|r| r.body["max_tokens"].as_u64()).collect();
    assert_eq!(budgets.iter().filter(|b| **b == 700).count(), 9);
    assert_eq!(budgets.iter().filter(|b| **b == 300).count(), 1);

    // A reply cut at max_tokens is stored (it is what the character said), marked as cut.
    let sent: Value = app.send_message(&user, &character, "你好", Some(30)).await.json().await.unwrap();
    assert_eq!(sent["job"]["status"], "succeeded", "{sent}");
    let chat = app.sim.requests().into_iter().last().unwrap();
    assert_eq!(chat.body["max_tokens"], 5);
    assert_eq!(chat.model, "chat-model");
    assert_eq!(sent["reply"]["truncated"], true, "{sent}");
    app.stop().await;
}
