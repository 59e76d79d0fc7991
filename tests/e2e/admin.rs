//! The admin role: bootstrapped from configuration, invisible to everyone else, and able to
//! disable an account — ending its sessions, API keys and jobs — without touching its data.

use std::time::Duration;

use fastnpc_shared::settings::{AdminAccount, Secret};
use fastnpc_tests::{
    harness::{PASSWORD, TestApp, TestAppBuilder, TestUser},
    sim::SimConfig,
};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "root";
const ADMIN_PASSWORD: &str = "s3cret admin pw";

fn with_admin(builder: TestAppBuilder) -> TestAppBuilder {
    builder.setting("FASTNPC_ADMIN_USERNAME", ADMIN).setting("FASTNPC_ADMIN_PASSWORD", ADMIN_PASSWORD)
}

async fn post(app: &TestApp, path: &str, user: Option<&TestUser>) -> (u16, Value) {
    let response = app.request(Method::POST, path, user).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn job_status(app: &TestApp, job: &str) -> String {
    let job_id = job.parse().expect("a job id");
    app.store.job_status(job_id).await.unwrap().expect("the job exists").to_string()
}

#[tokio::test]
async fn the_configured_admin_sees_users_and_stats_and_nobody_else_does() {
    let app = with_admin(TestApp::builder()).spawn().await;
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await;
    let ada = app.user("ada").await;
    app.ready_character(&ada, "诸葛亮").await;

    let me: Value = app.get("/v1/me", &admin).await.json().await.unwrap();
    assert_eq!(me["user"]["admin"], true);
    let me: Value = app.get("/v1/me", &ada).await.json().await.unwrap();
    assert_eq!(me["user"]["admin"], false);

    for path in ["/v1/admin/users", "/v1/admin/stats"] {
        let response = app.get(path, &ada).await;
        assert_eq!(response.status(), 404, "{path} is invisible to a user");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        assert_eq!(app.request(Method::GET, path, None).send().await.unwrap().status(), 401, "{path} anonymous");
    }

    let users: Value = app.get("/v1/admin/users", &admin).await.json().await.unwrap();
    let items = users["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{users}");
    let listed_ada = items.iter().find(|u| u["username"] == "ada").unwrap();
    assert_eq!((listed_ada["characters"].as_i64(), listed_ada["disabled"].as_bool()), (Some(1), Some(false)));
    assert!(items.iter().any(|u| u["username"] == ADMIN && u["admin"] == true));
    // Paging: one at a time, the cursor leads to the other one and then to nothing.
    let first: Value = app.get("/v1/admin/users?limit=1", &admin).await.json().await.unwrap();
    let after = first["next_after"].as_str().unwrap();
    let second: Value = app.get(&format!("/v1/admin/users?limit=1&after={after}"), &admin).await.json().await.unwrap();
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);
    let bad = app.get("/v1/admin/users?limit=0", &admin).await;
    assert_eq!(bad.status(), 422);

    let stats: Value = app.get("/v1/admin/stats", &admin).await.json().await.unwrap();
    assert_eq!(stats["users"]["total"], 2, "{stats}");
    assert_eq!(stats["users"]["admins"], 1);
    assert_eq!(stats["characters"]["ready"], 1);
    assert_eq!(stats["jobs"]["generate_character"]["succeeded"], 1);
    assert_eq!(stats["broker_connected"], true);

    // The admin cannot lock themselves out.
    let me = me_id(&app, &admin).await;
    let (status, body) = post(&app, &format!("/v1/admin/users/{me}/disable"), Some(&admin)).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = post(&app, &format!("/v1/admin/users/{}/disable", uuid_like()), Some(&admin)).await;
    assert_eq!(status, 404, "an unknown user");
    app.stop().await;
}

async fn me_id(app: &TestApp, user: &TestUser) -> String {
    let me: Value = app.get("/v1/me", user).await.json().await.unwrap();
    me["user"]["id"].as_str().unwrap().to_owned()
}

fn uuid_like() -> String {
    fastnpc_shared::ids::UserId::new().to_string()
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_keys_and_jobs_but_keeps_their_data() {
    // Calls that never answer within the test (and are not timed out by the client), one job at
    // a time: one generation runs, the next waits.
    let app = with_admin(TestApp::builder())
        .setting("FASTNPC_LLM_TIMEOUT_SECS", "900")
        .sim(SimConfig { time_to_first_token: Duration::from_secs(600), ..SimConfig::default() })
        .worker_concurrency(1)
        .spawn()
        .await;
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await;
    let ada = app.user("ada").await;
    let bob = app.user("bob").await;
    let key: Value = app.post_json("/v1/api-keys", &ada, &json!({"name": "script"})).await.json().await.unwrap();
    let ada_key = TestUser { username: "ada".into(), token: key["key"].as_str().unwrap().to_owned() };
    assert_eq!(app.get("/v1/me", &ada_key).await.status(), 200);

    let running = app.create_character(&ada, "诸葛亮").await;
    let running_job = running["job"]["id"].as_str().unwrap().to_owned();
    let mut stream = app.open_events(&ada, &running_job, None).await;
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        if event.event == "status" && event.data["status"] == "running" {
            break;
        }
    }
    let queued = app.create_character(&ada, "曹操").await;
    let queued_job = queued["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(job_status(&app, &queued_job).await, "queued");

    let ada_id = me_id(&app, &ada).await;
    app.wait_for_llm_in_flight(1).await;
    // Only the admin may.
    let (status, _) = post(&app, &format!("/v1/admin/users/{ada_id}/disable"), Some(&bob)).await;
    assert_eq!(status, 404);
    assert_eq!(app.get("/v1/me", &ada).await.status(), 200, "a user's attempt changed nothing");

    let (status, body) = post(&app, &format!("/v1/admin/users/{ada_id}/disable"), Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked_sessions"], 1);
    assert_eq!(body["stopped_jobs"], 2);
    assert_eq!(body["user"]["disabled"], true);

    // The running job stops (its open stream ends `cancelled`); the queued one never starts.
    let rest: Vec<_> = stream.map(|e| e.unwrap()).collect().await;
    assert_eq!(rest.last().unwrap().event, "cancelled");
    assert_eq!(job_status(&app, &queued_job).await, "cancelled");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while job_status(&app, &running_job).await != "cancelled" {
        assert!(tokio::time::Instant::now() < deadline, "the running job never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its model calls, which would wait ten minutes for a first token, were dropped.
    app.wait_until_llm_idle().await;
    assert_eq!(app.sim.stats().requests_served, 0);

    // Every credential is dead; the password still checks out but the account is closed.
    assert_eq!(app.get("/v1/me", &ada).await.status(), 401);
    assert_eq!(app.get("/v1/me", &ada_key).await.status(), 401);
    let login = |password: &'static str| {
        app.http.post(app.url("/v1/auth/login")).json(&json!({"username": "ada", "password": password})).send()
    };
    let refused = login(PASSWORD).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<Value>().await.unwrap()["type"], "/problems/account-disabled");
    assert_eq!(login("not the password").await.unwrap().status(), 401, "a guesser learns nothing");
    // Others are untouched.
    assert_eq!(app.get("/v1/me", &bob).await.status(), 200);

    // Disabling again is harmless; enabling brings back the key and the data, not the session.
    let (status, again) = post(&app, &format!("/v1/admin/users/{ada_id}/disable"), Some(&admin)).await;
    assert_eq!((status, again["stopped_jobs"].as_i64()), (200, Some(0)));
    let (status, body) = post(&app, &format!("/v1/admin/users/{ada_id}/enable"), Some(&admin)).await;
    assert_eq!((status, body["user"]["disabled"].as_bool()), (200, Some(false)), "{body}");
    assert_eq!(app.get("/v1/me", &ada).await.status(), 401, "old sessions stay revoked");
    assert_eq!(app.get("/v1/me", &ada_key).await.status(), 200, "the API key works again");
    let ada = app.login("ada", PASSWORD).await;
    let characters: Value = app.get("/v1/characters", &ada).await.json().await.unwrap();
    assert_eq!(characters["items"].as_array().unwrap().len(), 2, "the data was kept");
    app.stop().await;
}

#[tokio::test]
async fn an_existing_account_becomes_admin_only_with_the_configured_password() {
    let app = TestApp::spawn().await;
    let squatter = app.user(ADMIN).await;
    let mut settings = app.settings.clone();
    settings.http_addr = "127.0.0.1:0".parse().unwrap();

    settings.admin = Some(AdminAccount { username: ADMIN.into(), password: Secret::new(ADMIN_PASSWORD) });
    let refused = app.start_another(settings.clone()).await.expect_err("start-up refuses");
    assert!(refused.to_string().contains("refusing"), "{refused}");
    let me: Value = app.get("/v1/me", &squatter).await.json().await.unwrap();
    assert_eq!(me["user"]["admin"], false, "whoever registered the name first is not promoted");

    // With the account's own password it is promoted, and a later configuration naming
    // someone else demotes it: the configuration is the one source of truth.
    settings.admin = Some(AdminAccount { username: ADMIN.into(), password: Secret::new(PASSWORD) });
    app.start_another(settings.clone()).await.expect("starts");
    let me: Value = app.get("/v1/me", &squatter).await.json().await.unwrap();
    assert_eq!(me["user"]["admin"], true);
    settings.admin = Some(AdminAccount { username: "operator".into(), password: Secret::new(ADMIN_PASSWORD) });
    app.start_another(settings.clone()).await.expect("starts");
    let me: Value = app.get("/v1/me", &squatter).await.json().await.unwrap();
    assert_eq!(me["user"]["admin"], false);
    let operator = app.login("operator", ADMIN_PASSWORD).await;
    assert_eq!(app.get("/v1/admin/stats", &operator).await.status(), 200, "the configured account was created");
    settings.admin = None;
    app.start_another(settings).await.expect("starts");
    assert_eq!(app.get("/v1/admin/stats", &operator).await.status(), 404, "no admin configured, no admin");
    app.stop().await;
}
