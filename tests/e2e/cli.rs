//! The command-line client (`fastnpc login|whoami|create|say|chat|group|characters|jobs|logout`) against a
//! live API (Character Cards out and in with `characters card|import`), in both modes, as a script and a person use it: exit codes that mean something,
//! `--json` for scripts, the session kept readable by its owner only, and — under a
//! pseudo-terminal (util-linux `script`) — the live progress bar and the reply streamed as it is
//! written.

use std::{io::Write, os::unix::fs::PermissionsExt, path::Path, process::Stdio};

use fastnpc_tests::harness::{PASSWORD, TestApp, TestUser, sample_source};
use serde_json::{Value, json};

const CLI: &str = env!("CARGO_BIN_EXE_fastnpc-embedded");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the client with `config` as its configuration folder (and no inherited session).
async fn cli(config: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    cli_in(config, None, args, stdin).await
}

/// [`cli`], in the working folder `folder` when given.
async fn cli_in(config: &Path, folder: Option<&Path>, args: &[&str], stdin: Option<&str>) -> Run {
    let (config, args, stdin) =
        (config.to_owned(), args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(), stdin.map(str::to_owned));
    let folder = folder.map(Path::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(CLI);
        if let Some(folder) = folder {
            command.current_dir(folder);
        }
        let mut child = command
            .args(&args)
            .env("FASTNPC_CONFIG_DIR", &config)
            .env_remove("FASTNPC_SERVER")
            .env_remove("FASTNPC_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the client starts");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().unwrap();
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_script_logs_in_creates_a_character_talks_to_it_and_reads_exit_codes() {
    let app = TestApp::spawn().await;
    let user = app.user("scripter").await;
    let config = tempdir("cli");

    let anonymous = cli(&config, &["whoami"], None).await;
    assert_eq!(anonymous.code, Some(3), "not logged in: {}", anonymous.stderr);
    assert!(anonymous.stderr.contains("fastnpc login"), "{}", anonymous.stderr);
    let wrong = cli(
        &config,
        &["login", "--server", &app.api_url, "--username", &user.username, "--password-stdin"],
        Some("nope\n"),
    )
    .await;
    assert_eq!(wrong.code, Some(3), "a wrong password: {}", wrong.stderr);

    log_in(&app, &user, &config).await;
    let credentials = config.join("credentials.json");
    assert_eq!(std::fs::metadata(&credentials).unwrap().permissions().mode() & 0o777, 0o600, "only its owner reads it");
    let me = cli(&config, &["whoami", "--json"], None).await;
    assert_eq!(me.code, Some(0), "{}", me.stderr);
    assert_eq!(serde_json::from_str::<Value>(&me.stdout).unwrap()["user"]["username"], user.username.as_str());

    let text = sample_source("诸葛亮");
    let created = cli(&config, &["create", "诸葛亮", "--text", &text, "--json"], None).await;
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let character: Value = serde_json::from_str(&created.stdout).expect("--json prints JSON");
    assert_eq!(character["character"]["status"], "ready");
    assert!(created.stderr.is_empty(), "no progress drawn without a terminal: {}", created.stderr);
    let id = character["character"]["id"].as_str().unwrap().to_owned();

    let said = cli(&config, &["say", &id, "先生以为天下大势如何？"], None).await;
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    let history: Value = app.get(&format!("/v1/characters/{id}/messages"), &user).await.json().await.unwrap();
    let reply = history["items"][0]["content"].as_str().unwrap();
    assert_eq!(said.stdout.trim_end(), reply, "the streamed reply is the stored one");

    let listed = cli(&config, &["characters", "list", "--json"], None).await;
    assert_eq!(serde_json::from_str::<Value>(&listed.stdout).unwrap().as_array().unwrap().len(), 1);
    let shown = cli(&config, &["characters", "show", &id], None).await;
    assert!(shown.stdout.starts_with("诸葛亮"), "{}", shown.stdout);
    assert!(shown.stdout.contains("[basic_identity]"), "the profile, readable: {}", shown.stdout);

    let missing = cli(&config, &["jobs", "show", "0190a0a0-0000-7000-8000-000000000000"], None).await;
    assert_eq!(missing.code, Some(4), "{}", missing.stderr);
    let refused = cli(&config, &["create", "某人", "--text", "太短"], None).await;
    assert_eq!(refused.code, Some(2), "bad input: {}", refused.stderr);
    assert!(refused.stderr.contains("source.text"), "the server's detail: {}", refused.stderr);
    let usage = cli(&config, &["create", "某人"], None).await;
    assert_eq!(usage.code, Some(2), "no source named: {}", usage.stderr);

    let logout = cli(&config, &["logout"], None).await;
    assert_eq!(logout.code, Some(0), "{}", logout.stderr);
    assert!(!credentials.exists());
    assert_eq!(cli(&config, &["whoami"], None).await.code, Some(3));
    app.stop().await;
}

#[tokio::test]
async fn on_a_terminal_creation_draws_its_progress_and_a_reply_streams() {
    let app = TestApp::spawn().await;
    let user = app.user("viewer").await;
    let config = tempdir("cli-tty");
    log_in(&app, &user, &config).await;
    // util-linux `script` runs the client under a pseudo-terminal and records what it drew.
    let under_a_terminal = |command: String, typed: Option<&'static str>| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut child = std::process::Command::new("script")
                .args(["-qec", &command, "/dev/null"])
                .env("FASTNPC_CONFIG_DIR", &config)
                .env("COLUMNS", "120")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("script runs");
            let mut input = child.stdin.take().unwrap();
            if let Some(typed) = typed {
                input.write_all(typed.as_bytes()).unwrap();
            }
            // Kept open until the client exits: `script` ends its session at its input's end.
            let output = child.wait_with_output().unwrap();
            drop(input);
            assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stdout));
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
    };
    let text = sample_source("李白");
    let drawn = under_a_terminal(format!("{CLI} create 李白 --text '{text}'"), None).await.unwrap();
    assert!(drawn.contains("wrote "), "the progress bar named finished categories: {drawn}");
    assert!(drawn.contains("/9"), "the bar counts the nine categories: {drawn}");
    assert!(drawn.contains("[basic_identity]"), "then the profile: {drawn}");
    let listed: Value = app.get("/v1/characters", &user).await.json().await.unwrap();
    let id = listed["items"][0]["id"].as_str().unwrap().to_owned();
    let said = under_a_terminal(format!("{CLI} say {id} 你好"), None).await.unwrap();
    let history: Value = app.get(&format!("/v1/characters/{id}/messages"), &user).await.json().await.unwrap();
    let reply = history["items"][0]["content"].as_str().unwrap();
    assert!(said.replace("\r\n", "\n").contains(reply), "the reply as written: {said}");

    // The REPL: a line typed, its reply, then — once the prompt is back — Ctrl-D.
    let chatted = chat_under_a_terminal(&config, &id, "李白", "先生安好？").await;
    let history: Value = app.get(&format!("/v1/characters/{id}/messages"), &user).await.json().await.unwrap();
    assert_eq!(history["items"][1]["content"], "先生安好？", "the typed line was sent: {history}");
    let reply = history["items"][0]["content"].as_str().unwrap();
    assert!(chatted.contains(&format!("李白: {reply}")), "the reply, named: {chatted}");
    app.stop().await;
}

/// `fastnpc login` as `user`, keeping the session in `config`.
#[tokio::test]
async fn jobs_are_listed_and_a_character_exports_with_its_whole_conversation() {
    let app = TestApp::spawn().await;
    let user = app.user("archivist").await;
    let config = tempdir("cli-export");
    log_in(&app, &user, &config).await;
    let id = app.ready_character(&user, "诸葛亮").await;
    for line in ["先生以为天下大势如何？", "何以取荆州？"] {
        assert_eq!(cli(&config, &["say", &id, line], None).await.code, Some(0));
    }

    // The listing is the API's, newest first, and its filters are the server's.
    let listed = cli(&config, &["jobs", "list", "--json"], None).await;
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    let jobs: Value = serde_json::from_str(&listed.stdout).unwrap();
    let api: Value = app.get("/v1/jobs?limit=50", &user).await.json().await.unwrap();
    assert_eq!(jobs, api["items"], "the same jobs as the API lists");
    let kinds: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "chat_reply").count(), 2, "{kinds:?}");
    assert_eq!(*kinds.last().unwrap(), "generate_character", "newest first: {kinds:?}");
    let replies = cli(&config, &["jobs", "list", "--kind", "chat_reply", "--status", "succeeded"], None).await;
    assert_eq!(replies.code, Some(0), "{}", replies.stderr);
    assert_eq!(replies.stdout.lines().count(), 2, "{}", replies.stdout);
    assert!(replies.stdout.lines().all(|line| line.contains("chat_reply") && line.contains("succeeded")));
    let bad = cli(&config, &["jobs", "list", "--status", "sleeping"], None).await;
    assert_eq!(bad.code, Some(2), "an unknown status is the server's 400: {}", bad.stderr);

    let file = config.join("export.json");
    let exported = cli(&config, &["characters", "export", &id, "--output", file.to_str().unwrap()], None).await;
    assert_eq!(exported.code, Some(0), "{}", exported.stderr);
    let document: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let character: Value = app.get(&format!("/v1/characters/{id}"), &user).await.json().await.unwrap();
    assert_eq!(document["character"], character["character"]);
    let history: Value = app.get(&format!("/v1/characters/{id}/messages"), &user).await.json().await.unwrap();
    let mut newest_first = history["items"].as_array().unwrap().clone();
    newest_first.reverse();
    assert_eq!(document["messages"], Value::Array(newest_first), "every message, oldest first");
    assert_eq!(document["messages"][0]["content"], "先生以为天下大势如何？");
    assert!(document["memories"].is_object(), "{}", document["memories"]);
    let to_stdout = cli(&config, &["characters", "export", &id], None).await;
    assert_eq!(serde_json::from_str::<Value>(&to_stdout.stdout).unwrap(), document);
    app.stop().await;
}

#[tokio::test]
async fn a_character_goes_out_as_a_card_in_every_form_comes_back_the_same_and_a_broken_card_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.user("carder").await;
    let config = tempdir("cli-cards");
    log_in(&app, &user, &config).await;
    let id = app.ready_character(&user, "诸葛亮").await;
    let original: Value = app.get(&format!("/v1/characters/{id}"), &user).await.json().await.unwrap();
    let original = &original["character"];
    let count = async || {
        let listed: Value = app.get("/v1/characters", &user).await.json().await.unwrap();
        listed["items"].as_array().unwrap().len()
    };

    // Each of the four files, written where -o says, imports back as the same character.
    for (format, spec, marker) in [
        ("json", "v2", "chara_card_v2"),
        ("json", "v3", "chara_card_v3"),
        ("png", "v2", "chara"),
        ("png", "v3", "ccv3"),
    ] {
        let file = config.join(format!("{spec}.{format}"));
        let path = file.to_str().unwrap();
        let written =
            cli(&config, &["characters", "card", &id, "--format", format, "--spec", spec, "-o", path], None).await;
        assert_eq!(written.code, Some(0), "{format} {spec}: {}", written.stderr);
        let bytes = std::fs::read(&file).unwrap();
        let served = app.get(&format!("/v1/characters/{id}/card?format={format}&spec={spec}"), &user).await;
        assert_eq!(bytes, served.bytes().await.unwrap().to_vec(), "{format} {spec}: the API's card, byte for byte");
        if format == "png" {
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{spec}: a PNG");
            assert!(
                bytes.windows(marker.len() + 1).any(|w| w == format!("{marker}\0").as_bytes()),
                "{spec}: a {marker} chunk"
            );
        } else {
            assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap()["spec"], marker);
        }
        let imported = cli(&config, &["characters", "import", path, "--json"], None).await;
        assert_eq!(imported.code, Some(0), "{format} {spec}: {}", imported.stderr);
        let imported: Value = serde_json::from_str(&imported.stdout).expect("--json prints JSON");
        let copy = &imported["character"];
        assert_ne!(copy["id"], original["id"], "{format} {spec}: a new character");
        assert_eq!((&copy["name"], &copy["status"]), (&original["name"], &json!("ready")), "{format} {spec}");
        assert_eq!(copy["profile"], original["profile"], "{format} {spec}: the profile comes back whole");
        assert_eq!(copy["brief"], original["brief"], "{format} {spec}");
    }
    assert_eq!(count().await, 5);

    // Without -o: `<name>.card.<format>` in the working folder, named on standard output; an
    // existing file is not overwritten. The readable import prints the id and the name.
    let folder = tempdir("cli-cards-default");
    let written = cli_in(&config, Some(&folder), &["characters", "card", &id, "--format", "png"], None).await;
    assert_eq!(written.code, Some(0), "{}", written.stderr);
    assert_eq!(written.stdout.trim_end(), "诸葛亮.card.png");
    let png = std::fs::read(folder.join("诸葛亮.card.png")).unwrap();
    let again = cli_in(&config, Some(&folder), &["characters", "card", &id, "--format", "png"], None).await;
    assert_eq!(again.code, Some(2), "{}", again.stderr);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);
    assert_eq!(std::fs::read(folder.join("诸葛亮.card.png")).unwrap(), png, "left as it was");
    let imported = cli_in(&config, Some(&folder), &["characters", "import", "诸葛亮.card.png"], None).await;
    assert_eq!(imported.code, Some(0), "{}", imported.stderr);
    let (new_id, name) = imported.stdout.trim_end().split_once("  ").expect("id  name");
    assert_eq!(name, "诸葛亮");
    assert_eq!(app.get(&format!("/v1/characters/{new_id}"), &user).await.status(), 200);
    assert_eq!(count().await, 6);

    // Broken files: exit 2 with the server's reason, and nothing created.
    let broken = config.join("broken.png");
    std::fs::write(&broken, &png[..png.len() / 2]).unwrap();
    let refused = cli(&config, &["characters", "import", broken.to_str().unwrap()], None).await;
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("the PNG is truncated"), "the server's detail: {}", refused.stderr);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    let not_a_card = config.join("notes.json");
    std::fs::write(&not_a_card, "hello, not JSON").unwrap();
    let refused = cli(&config, &["characters", "import", not_a_card.to_str().unwrap(), "--json"], None).await;
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("neither a PNG image nor a JSON document"), "{}", refused.stderr);
    let missing = cli(&config, &["characters", "import", config.join("nowhere.png").to_str().unwrap()], None).await;
    assert_eq!(missing.code, Some(2), "{}", missing.stderr);
    assert_eq!(count().await, 6, "a refused card creates nothing");
    let unknown = cli(&config, &["characters", "card", "0190a0a0-0000-7000-8000-000000000000", "-o", "-"], None).await;
    assert_eq!(unknown.code, Some(4), "{}", unknown.stderr);
    app.stop().await;
}

async fn log_in(app: &TestApp, user: &TestUser, config: &Path) {
    let password = format!("{PASSWORD}\n");
    let args = ["login", "--server", &app.api_url, "--username", &user.username, "--password-stdin"];
    let login = cli(config, &args, Some(&password)).await;
    assert_eq!(login.code, Some(0), "{}", login.stderr);
}

/// `fastnpc chat` under a pseudo-terminal: types `line`, waits for the reply and the next prompt
/// on the screen, then ends the session with Ctrl-D (a Ctrl-D typed earlier would reach the
/// terminal before the line editor does). Returns what the terminal showed.
async fn chat_under_a_terminal(config: &Path, character: &str, name: &str, line: &str) -> String {
    use std::{
        io::Read,
        sync::{Arc, Mutex},
    };
    let mut child = std::process::Command::new("script")
        .args(["-qec", &format!("{CLI} chat {character}"), "/dev/null"])
        .env("FASTNPC_CONFIG_DIR", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script runs");
    let screen = Arc::new(Mutex::new(String::new()));
    let mut output = child.stdout.take().unwrap();
    let reader = std::thread::spawn({
        let screen = screen.clone();
        move || {
            let mut chunk = [0u8; 4096];
            while let Ok(read @ 1..) = output.read(&mut chunk) {
                screen.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..read]));
            }
        }
    });
    let mut input = child.stdin.take().unwrap();
    let shown = |screen: &Mutex<String>| screen.lock().unwrap().replace("\r\n", "\n");
    let wait_for = |what: &'static str, done: Box<dyn Fn(&str) -> bool + Send>| {
        let screen = screen.clone();
        async move {
            let poll = async {
                while !done(&shown(&screen)) {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(30), poll)
                .await
                .unwrap_or_else(|_| panic!("{what}; the terminal showed: {}", shown(&screen)));
        }
    };
    wait_for("the first prompt", Box::new(|text| text.contains("> "))).await;
    input.write_all(format!("{line}\r").as_bytes()).unwrap();
    // The reply is printed after the character's name; the prompt (among the line editor's
    // escape codes) comes back on the next line.
    let replied = format!("{name}: ");
    wait_for(
        "the reply and the next prompt",
        Box::new(move |text| {
            text.rfind(&replied).and_then(|at| text[at..].split_once('\n')).is_some_and(|(_, rest)| rest.contains("> "))
        }),
    )
    .await;
    input.write_all(b"\x04").unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "Ctrl-D ends the chat");
    reader.join().unwrap();
    drop(input);
    shown(&screen)
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fastnpc-{name}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_group_turn_loop_is_followed_live_speaker_by_speaker() {
    let app = TestApp::builder().setting("FASTNPC_GROUP_TURN_PAUSE_MS", "50").spawn().await;
    let user = app.user("host").await;
    let patched = app
        .request(reqwest::Method::PATCH, "/v1/me", Some(&user))
        .json(&serde_json::json!({"max_group_rounds": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let (libai, dufu) = (app.ready_character(&user, "李白").await, app.ready_character(&user, "杜甫").await);
    for name in ["杜甫", "李白"] {
        app.sim.add_rule(crate::groups::moderator_says(name, 0.9, Some(1)));
    }
    let config = tempdir("cli-group");
    log_in(&app, &user, &config).await;

    let created = cli(&config, &["group", "create", "诗会", "--member", &libai, "--member", &dufu], None).await;
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let group = created.stdout.trim().to_owned();
    let said = cli(&config, &["group", "say", &group, "今晚赏月作诗如何？"], None).await;
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    assert!(said.stderr.contains("[your turn: max_rounds]"), "the loop waits for the user: {}", said.stderr);
    let transcript: Value = app.get(&format!("/v1/groups/{group}/messages"), &user).await.json().await.unwrap();
    let replies: Vec<String> = transcript["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|m| m["author"] != "user")
        .map(|m| format!("{}: {}", m["speaker_name"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(replies.len(), 2, "{transcript}");
    assert_eq!(said.stdout.lines().collect::<Vec<_>>(), replies, "each turn, named, as it was stored");
    let listed = cli(&config, &["group", "list"], None).await;
    assert!(listed.stdout.contains("诗会"), "{}", listed.stdout);
    app.stop().await;
}
