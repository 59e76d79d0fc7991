//! Every resource belongs to its user: another user's ids answer 404 and change nothing.

use fastnpc_tests::harness::TestApp;
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn another_user_sees_neither_the_character_nor_its_job_nor_its_events() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let intruder = app.user("intruder").await;
    let created = app.create_character(&owner, "诸葛亮").await;
    let character_id = created["character"]["id"].as_str().unwrap();
    let job_id = created["job"]["id"].as_str().unwrap();
    app.wait_for_job(&owner, job_id).await;

    for path in
        [format!("/v1/characters/{character_id}"), format!("/v1/jobs/{job_id}"), format!("/v1/jobs/{job_id}/events")]
    {
        let response = app.get(&path, &intruder).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
    let delete =
        app.request(Method::DELETE, &format!("/v1/characters/{character_id}"), Some(&intruder)).send().await.unwrap();
    assert_eq!(delete.status(), 404);
    let listed: Value = app.get("/v1/characters", &intruder).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);

    // Nothing changed for the owner.
    let character: Value = app.get(&format!("/v1/characters/{character_id}"), &owner).await.json().await.unwrap();
    assert_eq!(character["character"]["status"], "ready");

    // Without credentials: 401, not 404.
    for path in
        [format!("/v1/characters/{character_id}"), format!("/v1/jobs/{job_id}"), format!("/v1/jobs/{job_id}/events")]
    {
        let response = app.request(Method::GET, &path, None).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    app.stop().await;
}
