//! The OpenAPI description (`/v1/openapi.json`) against the router it describes, and its
//! reference page (`/docs`). The schema fuzzer's run is in `schema_fuzz`.

use std::collections::BTreeSet;

use fastnpc_tests::harness::TestApp;
use reqwest::Method;
use serde_json::Value;

use crate::operations::{scrape, value};

/// Every `(method, path template)` the description holds.
pub(crate) fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("the description has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .filter(|key| ["get", "put", "post", "delete", "patch"].contains(&key.as_str()))
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// A concrete URL path for a template: each `{parameter}` a fresh id.
fn concrete(template: &str) -> String {
    let mut path = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("a closed parameter") + open;
        path.push_str(&rest[..open]);
        path.push_str(&uuid::Uuid::now_v7().to_string());
        rest = &rest[close + 1..];
    }
    path.push_str(rest);
    path
}

#[tokio::test]
async fn every_described_operation_is_served_by_the_route_it_names() {
    let app = TestApp::spawn().await;
    let response = app.http.get(app.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "OpenAPI 3.1: {}", doc["openapi"]);
    let operations = operations(&doc);
    assert!(operations.len() >= 40, "the whole API is described: {} operations", operations.len());

    for (method, template) in &operations {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = app.http.request(method.clone(), app.url(&concrete(template)));
        if method != Method::GET && method != Method::DELETE {
            request = request.json(&serde_json::json!({}));
        }
        let response = request.send().await.unwrap();
        assert_ne!(response.status(), 405, "{method} {template}: the router has the path but not the method");
    }

    // The router labels each request with the template of the route that matched it (or
    // `fallback`): every described operation must have matched its own template.
    let samples = scrape(&app).await;
    for (method, template) in &operations {
        let matched = value(&samples, "fastnpc_http_requests", &[("method", method), ("route", template)]);
        assert!(matched >= 1.0, "{method} {template} is described but no route with that template answered it");
    }
    assert_eq!(value(&samples, "fastnpc_http_requests", &[("route", "fallback")]), 0.0, "no request fell through");
}

#[tokio::test]
async fn every_operation_states_its_problems_and_every_reference_resolves() {
    let app = TestApp::spawn().await;
    let doc: Value = app.http.get(app.url("/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let schemas = doc["components"]["schemas"].as_object().expect("component schemas");
    for name in ["Problem", "EventPayload", "CharacterView", "JobView"] {
        assert!(schemas.contains_key(name), "{name} is a component");
    }
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session_cookie"]["in"], "cookie");

    // Every `$ref` points at a component that exists.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(schemas.contains_key(name), "a reference to a missing schema {name}");
    }

    for (method, template) in operations(&doc) {
        let operation = &doc["paths"][&template][method.to_lowercase()];
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.keys().any(|status| status.starts_with('2')), "{method} {template}: a success answer");
        for status in ["500", "503"] {
            assert!(responses.contains_key(status), "{method} {template}: {status}");
        }
        let public = operation["security"].as_array().is_some_and(|s| s.iter().all(|r| r == &serde_json::json!({})));
        // A public operation answers 401 only for its own reasons (a login's wrong password).
        assert!(public || responses.contains_key("401"), "{method} {template}: 401 when authenticated");
        if template.contains('{') {
            assert!(responses.contains_key("404"), "{method} {template}: a path id may be unknown");
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                if template == "/readyz" && status == "503" {
                    continue; // Readiness answers its own document when not ready.
                }
                assert!(
                    response["content"]["application/problem+json"]["schema"]["$ref"]
                        .as_str()
                        .is_some_and(|r| r.ends_with("/Problem")),
                    "{method} {template} {status}: a problem document"
                );
            }
        }
        assert!(operation["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {template}: a summary");
    }

    // Job-creating POSTs take `Idempotency-Key`; the event stream is SSE, typed by EventPayload.
    let header_names = |template: &str, method: &str| -> Vec<String> {
        doc["paths"][template][method]["parameters"]
            .as_array()
            .map(|p| p.iter().filter(|p| p["in"] == "header").map(|p| p["name"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    assert!(header_names("/v1/characters", "post").contains(&"Idempotency-Key".to_owned()));
    assert!(header_names("/v1/characters/{id}/messages", "post").contains(&"Prefer".to_owned()));
    assert!(header_names("/v1/jobs/{id}/events", "get").contains(&"Last-Event-ID".to_owned()));
    let stream = &doc["paths"]["/v1/jobs/{id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"];
    assert!(stream["schema"]["$ref"].as_str().unwrap().ends_with("/JobStreamEvent"), "{stream}");
    // One schema per event type, each naming its SSE event and its payload's schema.
    let events = schemas["JobStreamEvent"]["oneOf"].as_array().expect("one schema per event type");
    let names: BTreeSet<&str> = events.iter().map(|e| e["properties"]["event"]["enum"][0].as_str().unwrap()).collect();
    let expected =
        ["status", "progress", "token", "speaker", "message", "waiting", "reset", "succeeded", "failed", "cancelled"];
    assert_eq!(names, expected.into_iter().collect(), "every event type");
    let progress = events.iter().find(|e| e["properties"]["event"]["enum"][0] == "progress").unwrap();
    let payload = &progress["properties"]["data"]["contentSchema"];
    assert_eq!(payload["required"], serde_json::json!(["done", "total", "step"]), "{payload}");
}

#[tokio::test]
async fn the_reference_page_is_served_from_the_binary_under_its_own_policy() {
    let app = TestApp::spawn().await;
    let page = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("script-src 'self'") && !policy.contains("http"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("https://") && !html.contains("http://"), "no CDN: {html}");
    // Each script the page loads comes from this server, and the initializer reads our description.
    let scripts: Vec<&str> = html.split("<script src=\"").skip(1).map(|s| &s[..s.find('"').unwrap()]).collect();
    assert!(!scripts.is_empty(), "{html}");
    for script in scripts {
        let url = app.url(&format!("/docs/{}", script.trim_start_matches("./")));
        let response = app.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let body = response.text().await.unwrap();
        if script.contains("initializer") {
            assert!(body.contains("/v1/openapi.json"), "{body}");
        } else {
            assert!(body.len() > 100_000, "{url}: Swagger UI itself");
        }
    }
}
