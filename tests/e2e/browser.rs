//! The browser harness itself (`fastnpc_tests::webdriver`), in real headless Chromium: it opens
//! the app, acts on a page as a user would, waits on page state, reports what a failed wait saw,
//! speaks the language it was given, and leaves no browser process behind — not even when a test
//! panics.

use std::time::{Duration, Instant};

use fastnpc_tests::{
    harness::TestApp,
    webdriver::{self, Browser},
};
use serde_json::json;

/// A page as a `data:` URL (every byte but letters and digits escaped).
fn page(html: &str) -> String {
    let escaped: String = html
        .bytes()
        .map(|byte| if byte.is_ascii_alphanumeric() { char::from(byte).to_string() } else { format!("%{byte:02X}") })
        .collect();
    format!("data:text/html;charset=utf-8,{escaped}")
}

/// Waits (up to 10 s) until none of `pids` runs; fails naming those that still do.
async fn assert_all_exit(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: Vec<u32> = pids.iter().copied().filter(|&pid| webdriver::is_running(pid)).collect();
        if running.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = running
                .iter()
                .map(|pid| {
                    format!("{pid} {}", std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim())
                })
                .collect();
            panic!("browser processes still running 10 s after the browser was dropped: {names:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The browser's processes, checked to include Chromium's (else the exit checks prove nothing).
fn chromium_processes(browser: &Browser) -> Vec<u32> {
    let pids = browser.process_ids();
    let chromium = pids
        .iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "chromium"))
        .count();
    assert!(chromium >= 2, "chromedriver and Chromium's processes (a browser, a renderer, ...): {pids:?}");
    pids
}

#[tokio::test]
async fn a_browser_opens_the_api_and_sees_its_health() {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await.unwrap();
    browser.goto(&app.url("/healthz")).await.unwrap();
    browser.wait_for_text("body", r#""status":"ok""#).await.unwrap();
    assert!(browser.text("body").await.unwrap().contains(r#""status":"ok""#));
    assert_eq!(browser.current_url().await.unwrap(), app.url("/healthz"));
    assert_eq!(browser.execute("return navigator.language", &[]).await.unwrap(), "en-US");

    let screenshot = browser.screenshot("healthz").await.unwrap();
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000, "{} is a PNG", screenshot.display());
    assert_eq!(browser.cookies().await.unwrap(), vec![], "the API sets no cookie on /healthz");
    browser.assert_no_console_errors().await.unwrap();

    let (pids, profile) = (chromium_processes(&browser), browser.temp_dir().to_owned());
    browser.close().await.unwrap();
    assert_all_exit(&pids).await;
    assert!(!profile.exists(), "{} is removed", profile.display());
    app.stop().await;
}

const FORM: &str = r#"<!doctype html><meta charset="utf-8">
<textarea id="message" placeholder="说点什么"></textarea>
<button id="send">发送</button> <button id="boom">boom</button>
<ul id="sent"></ul>
<p id="spinner">…</p> <p id="later" hidden>到了</p>
<script>
  const message = document.getElementById('message');
  const send = () => {
    const li = document.createElement('li');
    li.textContent = message.value;
    document.getElementById('sent').append(li);
    message.value = '';
  };
  message.addEventListener('keydown', event => {
    if (event.key === 'Enter' && !event.shiftKey) { event.preventDefault(); send(); }
  });
  document.getElementById('send').addEventListener('click', send);
  document.getElementById('boom').addEventListener('click', () => { throw new Error('kaboom'); });
  setTimeout(() => { document.getElementById('spinner').remove(); document.getElementById('later').hidden = false; }, 300);
</script>"#;

#[tokio::test]
async fn the_browser_types_clicks_and_waits_as_a_user_would() {
    let mut browser = Browser::start().await.unwrap();
    let form = page(FORM);
    browser.goto(&form).await.unwrap();

    // Chinese text and a line break arrive as typed; the line break does not "send".
    browser.type_into("#message", "你好，世界\n第二行 😀").await.unwrap();
    assert_eq!(browser.property("#message", "value").await.unwrap(), "你好，世界\n第二行 😀");
    assert!(browser.find_all("#sent li").await.unwrap().is_empty(), "a typed newline is not Enter");
    // Typing replaces what was there.
    browser.type_into("#message", "替换").await.unwrap();
    assert_eq!(browser.property("#message", "value").await.unwrap(), "替换");
    browser.press_enter("#message").await.unwrap();
    browser.wait_for_text("#sent li", "替换").await.unwrap();
    browser.type_into("#message", "second").await.unwrap();
    browser.click("#send").await.unwrap();
    let second = browser.wait_for_text("#sent", "second").await.unwrap();
    assert_eq!(second.text().await.unwrap(), "替换\nsecond");
    browser.wait_until("two messages sent", "document.querySelectorAll('#sent li').length === 2").await.unwrap();
    assert_eq!(browser.find_all("#sent li").await.unwrap().len(), 2);
    assert_eq!(browser.attribute("#message", "placeholder").await.unwrap().as_deref(), Some("说点什么"));
    assert_eq!(browser.attribute("#message", "data-missing").await.unwrap(), None);

    // Waits on what the page does later.
    browser.wait_gone("#spinner").await.unwrap();
    assert_eq!(browser.wait_for("#later").await.unwrap().text().await.unwrap(), "到了");
    assert!(browser.find("#spinner").await.is_err());

    // Scripts, with elements as arguments.
    let list = browser.find("#sent").await.unwrap();
    let args = [list.as_arg(), json!(40)];
    let count = browser.execute("return arguments[0].children.length + arguments[1]", &args).await.unwrap();
    assert_eq!(count, 42);
    let later = browser.execute_async("const done = arguments[0]; setTimeout(() => done('later'), 10);", &[]);
    assert_eq!(later.await.unwrap(), "later");
    browser.set_window_size(800, 600).await.unwrap();
    assert_eq!(browser.execute("return window.outerWidth", &[]).await.unwrap(), 800);

    // An exception thrown by the page shows in the console errors.
    browser.assert_no_console_errors().await.unwrap();
    browser.click("#boom").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !browser.console_errors().await.unwrap().iter().any(|entry| entry.message.contains("kaboom")) {
        assert!(Instant::now() < deadline, "the exception reaches the console: {:?}", browser.console_log().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(browser.assert_no_console_errors().await.is_err());

    // History.
    browser.refresh().await.unwrap();
    assert!(browser.find_all("#sent li").await.unwrap().is_empty(), "a reload starts the page again");
    browser.goto(&page("<p id=other>other</p>")).await.unwrap();
    browser.back().await.unwrap();
    assert_eq!(browser.current_url().await.unwrap(), form);

    // A wait that times out says what it waited for and what the page showed, with a screenshot.
    browser.set_timeout(Duration::from_millis(300));
    let error = format!("{:#}", browser.wait_for("#never").await.unwrap_err());
    for expected in ["timed out", "`#never` to be displayed", "url: data:text/html", "发送", "screenshot: /"] {
        assert!(error.contains(expected), "{expected:?} in: {error}");
    }
    let screenshot = error.split("screenshot: ").nth(1).unwrap().lines().next().unwrap();
    assert!(std::path::Path::new(screenshot).is_file(), "{screenshot} is saved");
    let error = format!("{:#}", browser.wait_until("a missing global", "window.missing.ready").await.unwrap_err());
    assert!(error.contains("the condition threw: TypeError"), "{error}");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_chinese_browser_asks_for_chinese() {
    // A one-request server (a thread: it only blocks itself) that answers with the request's
    // Accept-Language.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut language = "none".to_owned();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("accept-language")
            {
                value.trim().clone_into(&mut language);
            }
        }
        let body = format!("<p id=language>{language}</p>");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        (&stream).write_all(response.as_bytes()).unwrap();
    });

    let browser = Browser::builder().chinese().start().await.unwrap();
    assert_eq!(browser.language(), "zh-CN");
    browser.goto(&format!("http://{address}/")).await.unwrap();
    assert!(browser.text("#language").await.unwrap().starts_with("zh-CN"), "Accept-Language");
    assert_eq!(browser.execute("return navigator.language", &[]).await.unwrap(), "zh-CN");
    server.join().unwrap();
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_browser_test_that_panics_leaves_no_chromium_running() {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let browser = Browser::start().await.unwrap();
        browser.goto(&page("<p>about to panic</p>")).await.unwrap();
        browser.wait_for_text("p", "about to panic").await.unwrap();
        sender.send((chromium_processes(&browser), browser.temp_dir().to_owned())).unwrap();
        panic!("a deliberate panic: the test checks that the browser is cleaned up");
    });
    assert!(test.await.unwrap_err().is_panic());
    let (pids, profile) = receiver.await.expect("the browser started before the panic");
    assert_all_exit(&pids).await;
    assert!(!profile.exists(), "{} is removed", profile.display());
}

#[tokio::test]
async fn a_test_can_hold_two_browsers_at_once() {
    // Taken together, so that two such tests cannot each hold one slot and wait for the other's.
    let count = webdriver::browser_slots().min(2);
    let browsers = Browser::builder().start_many(count).await.unwrap();
    assert_eq!(browsers.len(), count as usize);
    for (number, browser) in browsers.iter().enumerate() {
        browser.goto(&page(&format!("<p id=me>browser {number}</p>"))).await.unwrap();
    }
    for (number, browser) in browsers.iter().enumerate() {
        assert_eq!(browser.text("#me").await.unwrap(), format!("browser {number}"));
    }
    if let [first, second] = &browsers[..] {
        assert_ne!(first.temp_dir(), second.temp_dir());
        assert!(first.process_ids().iter().all(|pid| !second.process_ids().contains(pid)), "separate processes");
    }
    for browser in browsers {
        browser.close().await.unwrap();
    }
}
