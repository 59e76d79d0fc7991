//! `webbench`: the web app benchmark. Not a test: it measures and prints.
//!
//! Over a [`TestApp`] (the backend of `FASTNPC_TEST_BACKEND`) and a real headless Chromium
//! ([`Browser`]):
//!
//! 1. *transfer size of the characters list*: `/` and the assets it names, plus the modules the
//!    list loads (`app.js` and its static imports, transitively; `pages/characters.js` and its
//!    static imports), fetched with `Accept-Encoding: gzip` and summed as sent (compressed), and
//!    uncompressed;
//! 2. *create click → first progress shown*: the User Timing marks `fastnpc:create-submitted`
//!    (`pages/create.js`), `fastnpc:progress-received` and `fastnpc:progress-shown` (the frame
//!    painting the first progress row, `pages/generating.js`), over five creations;
//! 3. *a 1,000-message history*: 500 turns seeded through the API, the chat page opened and its
//!    log scrolled to the top five times: history requests and messages rendered after each.
//!
//! ```text
//! cargo run -p fastnpc-tests --bin webbench
//! ```

use std::{
    collections::{BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fastnpc_tests::{
    harness::{PASSWORD, TestApp, TestUser, sample_source},
    sim::SimConfig,
    webdriver::Browser,
};
use serde_json::{Value, json};

/// Creations measured.
const RUNS: usize = 5;
/// Chat turns seeded (each a message and its reply).
const TURNS: usize = 500;
/// Scrolls to the top of the chat log.
const SCROLLS: usize = 5;

/// Waits until the page `name` has finished its initial load.
async fn wait_for_page(browser: &Browser, name: &str) -> anyhow::Result<()> {
    let condition =
        format!("document.body.dataset.page === '{name}' && document.getElementById('page')?.dataset.ready === 'true'");
    browser.wait_until(&format!("the {name} page, loaded"), &condition).await
}

/// Opens `path` of the app (a full page load) and waits for page `name`.
async fn open(browser: &Browser, app: &TestApp, path: &str, name: &str) -> anyhow::Result<()> {
    browser.goto(&app.url(path)).await?;
    wait_for_page(browser, name).await
}

/// Logs `user` in through the login page.
async fn sign_in(browser: &Browser, app: &TestApp, user: &TestUser) -> anyhow::Result<()> {
    open(browser, app, "/login", "login").await?;
    browser.type_into("#login-username", &user.username).await?;
    browser.type_into("#login-password", PASSWORD).await?;
    browser.click("#login-submit").await?;
    wait_for_page(browser, "characters").await
}

/// One response as sent: (bytes on the wire, bytes once decompressed, body decompressed).
async fn fetch_gzip(http: &reqwest::Client, url: &str) -> anyhow::Result<(usize, usize, String)> {
    let response = http.get(url).header("Accept-Encoding", "gzip").send().await?.error_for_status()?;
    let gzipped =
        response.headers().get("content-encoding").is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let wire = response.bytes().await?;
    let body = if gzipped { gunzip(&wire)? } else { wire.to_vec() };
    Ok((wire.len(), body.len(), String::from_utf8_lossy(&body).into_owned()))
}

/// Decompresses with the system's `gzip` (the workspace's reqwest has no gzip feature).
fn gunzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("run gzip -dc")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    if !output.status.success() {
        bail!("gzip -dc failed");
    }
    Ok(output.stdout)
}

/// The relative static imports of a module (`import … from './x.js'`, `import './x.js'`).
fn static_imports(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["from '", "from \"", "import '", "import \""] {
        let quote = &marker[marker.len() - 1..];
        for (index, _) in source.match_indices(marker) {
            let rest = &source[index + marker.len()..];
            if let Some(end) = rest.find(quote) {
                let path = &rest[..end];
                if path.starts_with("./") || path.starts_with("../") {
                    found.push(path.to_owned());
                }
            }
        }
    }
    found
}

/// `relative` resolved against the folder of `module` (both under the asset prefix).
fn resolve(module: &str, relative: &str) -> String {
    let mut parts: Vec<&str> = module.split('/').collect();
    parts.pop();
    for part in relative.split('/') {
        match part {
            "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// Part 1: what the characters list transfers.
async fn transfer_size(app: &TestApp) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let (index_wire, index_plain, index) = fetch_gzip(&http, &app.url("/")).await?;
    let mut rows = vec![("/".to_owned(), index_wire, index_plain)];
    // The assets `index.html` names: `/assets/<hash>/…` in href and src attributes.
    let mut named = Vec::new();
    for marker in ["href=\"", "src=\""] {
        for (at, _) in index.match_indices(marker) {
            let rest = &index[at + marker.len()..];
            let path = &rest[..rest.find('"').context("attribute end")?];
            if path.starts_with("/assets/") {
                named.push(path.to_owned());
            }
        }
    }
    let app_js = named.iter().find(|p| p.ends_with("/app.js")).context("index.html names app.js")?.clone();
    let prefix = app_js.trim_end_matches("app.js").to_owned();
    let mut seen: BTreeSet<String> = named.iter().cloned().collect();
    let mut queue: VecDeque<String> = named.into_iter().collect();
    let characters = format!("{prefix}pages/characters.js");
    if seen.insert(characters.clone()) {
        queue.push_back(characters);
    }
    while let Some(path) = queue.pop_front() {
        let (wire, plain, body) = fetch_gzip(&http, &app.url(&path)).await?;
        if path.ends_with(".js") {
            for import in static_imports(&body) {
                let next = resolve(&path, &import);
                if seen.insert(next.clone()) {
                    queue.push_back(next);
                }
            }
        }
        rows.push((path.trim_start_matches(&prefix).to_owned(), wire, plain));
    }
    println!("## 1. Transfer size of the characters list\n");
    println!("| resource | sent (gzip) | uncompressed |");
    println!("|---|---|---|");
    for (path, wire, plain) in &rows {
        println!("| `{path}` | {wire} B | {plain} B |");
    }
    let wire: usize = rows.iter().map(|r| r.1).sum();
    let plain: usize = rows.iter().map(|r| r.2).sum();
    println!(
        "| **total** ({} files) | **{:.1} KB** | {:.1} KB |\n",
        rows.len(),
        wire as f64 / 1000.0,
        plain as f64 / 1000.0
    );
    println!("Goal ≤ 150 KB sent: {}\n", if wire <= 150_000 { "met" } else { "NOT met" });
    Ok(())
}

/// The start time of the User Timing mark `name` (ms since the page's time origin).
async fn mark(browser: &Browser, name: &str) -> anyhow::Result<f64> {
    let script =
        "const m = performance.getEntriesByName(arguments[0], 'mark'); return m.length ? m[0].startTime : null";
    let value = browser.execute(script, &[json!(name)]).await?;
    value.as_f64().with_context(|| format!("no mark {name}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::MIN, f64::max)
}

/// Part 2: create click → first progress shown.
async fn create_to_progress(app: &TestApp, browser: &Browser) -> anyhow::Result<()> {
    println!("## 2. Create click → first progress shown ({RUNS} creations, default simulator)\n");
    println!("| run | submitted → received | received → shown | submitted → shown |");
    println!("|---|---|---|---|");
    let (mut received, mut shown) = (Vec::new(), Vec::new());
    for run in 1..=RUNS {
        open(browser, app, "/characters/new", "create-character").await?;
        let name = format!("诸葛亮{run}");
        browser.type_into("#character-name", &name).await?;
        browser.type_into("#source-text", &sample_source(&name)).await?;
        browser.click("#create-submit").await?;
        wait_for_page(browser, "character").await?;
        let submitted = mark(browser, "fastnpc:create-submitted").await?;
        let got = mark(browser, "fastnpc:progress-received").await?;
        let painted = mark(browser, "fastnpc:progress-shown").await?;
        println!("| {run} | {:.1} ms | {:.1} ms | {:.1} ms |", got - submitted, painted - got, painted - submitted);
        received.push(got - submitted);
        shown.push(painted - got);
    }
    println!("| **median** | {:.1} ms | {:.1} ms | |", median(received.clone()), median(shown.clone()));
    println!("| **max** | {:.1} ms | {:.1} ms | |\n", max(&received), max(&shown));
    println!("Goal received → shown ≤ 50 ms: {}\n", if max(&shown) <= 50.0 { "met" } else { "NOT met" });
    Ok(())
}

/// History requests made so far and chat messages rendered now.
async fn chat_state(browser: &Browser) -> anyhow::Result<(u64, u64)> {
    let script = "return [performance.getEntriesByType('resource').filter(e => e.name.includes('/messages')).length, \
                  document.querySelectorAll('[data-test=\"chat-message\"]').length]";
    let value = browser.execute(script, &[]).await?;
    Ok((value[0].as_u64().context("requests")?, value[1].as_u64().context("messages")?))
}

/// Part 3: a 1,000-message history.
async fn long_history(app: &TestApp, browser: &Browser, user: &TestUser) -> anyhow::Result<()> {
    app.sim.set_config(SimConfig::instant());
    let character = app.ready_character(user, "司马懿").await;
    let seeding = Instant::now();
    for turn in 0..TURNS {
        let response = app.send_message(user, &character, &format!("第{turn}个问题：你怎么看？"), Some(30)).await;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() || body["job"]["status"] != "succeeded" {
            bail!("turn {turn}: {status} {body}");
        }
    }
    println!("## 3. A {}-message history\n", TURNS * 2);
    println!("Seeded {TURNS} turns in {:.1} s.\n", seeding.elapsed().as_secs_f64());
    let started = Instant::now();
    browser.goto(&app.url(&format!("/characters/{character}/chat"))).await?;
    wait_for_page(browser, "chat").await?;
    let ready = started.elapsed();
    let ready_in_page = browser
        .execute("return performance.getEntriesByType('navigation')[0]?.loadEventEnd ?? null", &[])
        .await?
        .as_f64();
    let (mut requests, mut messages) = chat_state(browser).await?;
    println!(
        "Page ready (`#page[data-ready=\"true\"]`) {:.0} ms after the navigation started (polled every 50 ms; load event at {}).\n",
        ready.as_secs_f64() * 1000.0,
        ready_in_page.map_or("?".to_owned(), |ms| format!("{ms:.0} ms"))
    );
    println!("| moment | history requests (total) | requests this step | messages rendered |");
    println!("|---|---|---|---|");
    println!("| at load | {requests} | {requests} | {messages} |");
    let mut all_one = true;
    for scroll in 1..=SCROLLS {
        browser.execute("document.getElementById('chat-log').scrollTop = 0", &[]).await?;
        let condition = format!("document.querySelectorAll('[data-test=\"chat-message\"]').length > {messages}");
        browser.wait_until(&format!("more than {messages} messages after scroll {scroll}"), &condition).await?;
        let (now_requests, now_messages) = chat_state(browser).await?;
        let step = now_requests - requests;
        all_one &= step == 1;
        println!("| scroll {scroll} | {now_requests} | {step} | {now_messages} |");
        (requests, messages) = (now_requests, now_messages);
    }
    println!("\nOne request per scroll: {}\n", if all_one { "yes" } else { "NO" });
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = TestApp::builder()
        // 500 chat turns from one user within a minute.
        .setting("FASTNPC_LIMIT_SUBMISSIONS_PER_MINUTE", "1000000")
        .setting("FASTNPC_LIMIT_ACTIVE_JOBS", "1000000")
        .spawn()
        .await;
    println!("# webbench\n");
    transfer_size(&app).await?;

    let user = app.user("webbench").await;
    let browser = Browser::builder().timeout(Duration::from_secs(120)).start().await?;
    let outcome = async {
        sign_in(&browser, &app, &user).await?;
        create_to_progress(&app, &browser).await?;
        long_history(&app, &browser, &user).await
    }
    .await;
    browser.close().await?;
    outcome
}
