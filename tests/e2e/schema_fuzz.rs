//! The API against its own description, by a schema-driven fuzzer: schemathesis (PyPI), which
//! `scripts/schemathesis` installs and `scripts/test` names in `FASTNPC_TEST_SCHEMATHESIS` for
//! this group's own pass, run once per backend. It generates requests from
//! `/v1/openapi.json` — examples, boundary values, then random valid and invalid data — sends
//! them to a live API as a logged-in user, and checks every answer: no 5xx, a status the
//! operation documents, the documented content type and headers, a body valid against the
//! documented schema, invalid input refused with a 4xx, no answer without credentials.
//!
//! Left out, and why: the three operations that end the fuzzing user's session or account
//! (`DELETE /v1/me`, `POST /v1/auth/logout`, `POST /v1/auth/logout-everywhere`; the suite tests
//! them), and the `positive_data_acceptance` check, which expects a 2xx for any input the
//! schemas allow, while some rules are not expressible in JSON Schema (a name without control
//! characters, a source of at least 20 characters after trimming, a title without `|`): those
//! answer a documented 422.

use fastnpc_tests::{harness::TestApp, source_fixtures::SourceFixtures};

/// Test cases per operation and phase: the whole run stays within a few minutes on 2 cores.
const MAX_EXAMPLES: &str = "50";

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_description() {
    let st = std::env::var("FASTNPC_TEST_SCHEMATHESIS").expect(
        "the schema fuzzer needs schemathesis: run this through `bash scripts/test`, or set \
         FASTNPC_TEST_SCHEMATHESIS=$(bash scripts/schemathesis)",
    );
    // Encyclopedia searches go to the loopback stand-in, which answers any of them.
    let fixtures = SourceFixtures::start().await;
    let app = fixtures.configure_lenient(TestApp::builder()).spawn().await;
    let user = app.user("fuzzer").await;
    // Some data of the user's own, so listings and reads answer with real documents, and the
    // operations on one resource reach their handlers' logic with real ids (DELETEs keep random
    // ids: deleting these early would leave the rest of the run with nothing but 404s).
    let character = app.ready_character(&user, "诸葛亮").await;
    let reply = app.send_message(&user, &character, "先生以为天下大势如何？", Some(30)).await;
    assert_eq!(reply.status(), 200);
    let reply: serde_json::Value = reply.json().await.unwrap();
    let job = reply["job"]["id"].as_str().expect("the reply's job").to_owned();
    let group =
        app.post_json("/v1/groups", &user, &serde_json::json!({"name": "隆中", "character_ids": [character]})).await;
    assert_eq!(group.status(), 201);
    let group: serde_json::Value = group.json().await.unwrap();
    let group = group["group"]["id"].as_str().expect("the group's id").to_owned();
    let config = std::env::temp_dir().join(format!("fastnpc-schemathesis-{}.toml", uuid::Uuid::now_v7()));
    let with_id = |path: &str, id: &str| {
        format!(
            // One filter (an operation's name is `METHOD /path`): separate ones would be OR-ed.
            "[[operations]]\ninclude-name-regex = '^(GET|POST|PUT|PATCH) {path}'\n\
             parameters = {{ \"path.id\" = \"{id}\" }}\n\n"
        )
    };
    let sections = [
        // Not the operations with a second path parameter (a version): there the fuzzer's
        // "wrong type for `id`" cases, their `id` replaced by the real one, become valid requests
        // it then expects to be refused.
        with_id(r"/v1/characters/\{id\}(?!/versions/\{version\})", &character),
        with_id(r"/v1/jobs/\{id\}", &job),
        with_id(r"/v1/groups/\{id\}", &group),
    ];
    std::fs::write(&config, sections.concat()).unwrap();

    let junit = std::env::temp_dir().join(format!("fastnpc-schemathesis-{}.xml", uuid::Uuid::now_v7()));
    let mut command = std::process::Command::new(&st);
    // Its own working folder: schemathesis keeps a cache (`.schemathesis/`) where it runs.
    let workdir = std::env::temp_dir().join(format!("fastnpc-schemathesis-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&workdir).unwrap();
    command
        .current_dir(&workdir)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &app.url("/v1/openapi.json")])
        .args(["--url", &app.api_url])
        .args(["--header", &format!("Authorization: Bearer {}", user.token)])
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", "20261130", "--no-shrink"])
        .args(["--exclude-operation-id", "delete_me"])
        .args(["--exclude-operation-id", "logout"])
        .args(["--exclude-operation-id", "logout_everywhere"])
        .args(["--workers", "1", "--request-timeout", "30", "--generation-database", "none"])
        .args(["--suppress-health-check", "all", "--no-color"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&junit);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|error| panic!("cannot run {st}: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    let report = std::fs::read_to_string(&junit);
    let _ = std::fs::remove_file(&junit);
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_dir_all(&workdir);
    let junit = report.unwrap_or_else(|error| panic!("no report ({error}): {stdout}\n{stderr}"));
    let attribute = |name: &str| -> u64 {
        let at = junit.find(&format!(" {name}=\"")).unwrap_or_else(|| panic!("{name} in the report: {junit}"));
        let value = &junit[at + name.len() + 3..];
        value[..value.find('"').unwrap()].parse().unwrap()
    };
    let (operations, failures, errors) = (attribute("tests"), attribute("failures"), attribute("errors"));
    println!("schema fuzzing: {operations} operations, {failures} failed, {errors} errors");
    assert!(operations >= 40, "every operation was fuzzed: {operations}\n{stdout}");
    assert!(output.status.success() && failures == 0 && errors == 0, "{stdout}\n{stderr}");
}
