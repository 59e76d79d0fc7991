//! A small WebDriver client for the browser tests: real headless Chromium (Debian's `chromium`
//! package), driven over the W3C WebDriver protocol by its `chromedriver`.
//!
//! Why our own client rather than fantoccini or thirtyfour: the tests need a dozen commands, and
//! those crates bring their own HTTP stacks and many dependencies into a workspace that keeps its
//! tree lean. WebDriver is JSON over HTTP, which `reqwest` and `serde_json` already speak, so the
//! whole client is this file.
//!
//! - **One chromedriver per [`Browser`]**, on a free port, with a fresh profile in its own
//!   temporary directory: nothing is shared between tests, and cleanup is "end the session, kill
//!   the child, remove the directory". [`Browser::close`] does that; `Drop` does it too (for tests
//!   that panic), synchronously — the session is ended with a plain blocking HTTP request, then
//!   Drop waits for Chromium's processes to end, killing them if chromedriver did not answer or
//!   they outlive a deadline. A panicking test also leaves a screenshot (`panic-<thread>.png`).
//!   (A test process killed outright runs no Drop: its browsers outlive it.)
//! - **At most `FASTNPC_TEST_BROWSERS` (default 2) browsers at once** in the whole test binary:
//!   tests run in parallel on a 2-core machine, and each Chromium is several processes. A test
//!   that needs two browsers at once must take them together with [`BrowserBuilder::start_many`]:
//!   two tests each holding one and waiting for a second would wait for each other.
//! - **Waits poll page state** (every 50 ms) up to a deadline (15 s by default; CI is slow), never
//!   a fixed sleep. The actions that take a selector ([`Browser::click`],
//!   [`Browser::type_into`], [`Browser::text`], ...) first wait for their element, and retry when
//!   the page re-rendered it under them (a stale element, a click that landed on an overlay). A
//!   wait that times out fails with what it waited for, the current URL, the start of the page's
//!   text, the browser console, and the path of a screenshot it saved.
//! - Nothing is downloaded: the browser is `/usr/bin/chromium` and the driver
//!   `/usr/bin/chromedriver` (`scripts/services` installs both), overridable with
//!   `FASTNPC_TEST_CHROMIUM` and `FASTNPC_TEST_CHROMEDRIVER`.
//!
//! ```ignore
//! let browser = Browser::start().await?;
//! browser.goto(&app.url("/")).await?;
//! browser.type_into("#username", "ada").await?;
//! browser.click("button[type=submit]").await?;
//! browser.wait_for_text("header", "ada").await?;
//! assert!(browser.console_errors().await?.is_empty());
//! browser.close().await?;
//! ```

use std::{
    cell::RefCell,
    fmt,
    future::Future,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        LazyLock, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long a wait polls before it fails, unless changed with [`BrowserBuilder::timeout`] or
/// [`Browser::set_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a wait looks at the page again.
const POLL: Duration = Duration::from_millis(50);
/// How long chromedriver may take to listen.
const DRIVER_START: Duration = Duration::from_secs(20);
/// A bound on any one WebDriver command (a page load, a session start on a loaded machine).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a browser may wait for a free slot before the test fails (rather than hang).
const SLOT_WAIT: Duration = Duration::from_secs(600);
/// How much of the page's text a timed-out wait reports.
const PAGE_TEXT_CHARS: usize = 2000;
/// The key of a web element reference in WebDriver's JSON (fixed by the W3C specification).
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Special keys for [`Element::send_keys`] (WebDriver's code points). Modifiers stay down until
/// [`keys::NULL`] or the end of the call.
pub mod keys {
    pub const NULL: &str = "\u{E000}";
    pub const BACKSPACE: &str = "\u{E003}";
    pub const TAB: &str = "\u{E004}";
    pub const ENTER: &str = "\u{E007}";
    pub const SHIFT: &str = "\u{E008}";
    pub const CONTROL: &str = "\u{E009}";
    pub const ESCAPE: &str = "\u{E00C}";
}

/// Browsers started by this process, to name their directories.
static BROWSERS_STARTED: AtomicU32 = AtomicU32::new(0);

/// Browsers allowed at once in this test binary, and the semaphore handing out the slots.
static SLOTS: LazyLock<(u32, Semaphore)> = LazyLock::new(|| {
    let slots = std::env::var("FASTNPC_TEST_BROWSERS")
        .ok()
        .and_then(|value| value.trim().parse::<u32>().ok())
        .filter(|&slots| slots > 0)
        .unwrap_or(2);
    (slots, Semaphore::new(slots as usize))
});

/// How many browsers may run at once in this test binary (`FASTNPC_TEST_BROWSERS`, default 2).
pub fn browser_slots() -> u32 {
    SLOTS.0
}

fn env_or(variable: &str, default: &str) -> String {
    std::env::var(variable).ok().filter(|value| !value.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// Where screenshots go: `FASTNPC_SCREENSHOT_DIR`, or else `<target>/screenshots/<backend>`
/// (the backend of `FASTNPC_TEST_BACKEND`, so the two passes of the matrix keep theirs apart).
pub fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FASTNPC_SCREENSHOT_DIR").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    let backend = match crate::harness::Backend::from_env() {
        crate::harness::Backend::Distributed => "distributed",
        crate::harness::Backend::Embedded => "embedded",
    };
    target_dir().join("screenshots").join(backend)
}

/// The workspace's target directory: `CARGO_TARGET_DIR` (now, or when this was built; relative to
/// the workspace) or `<workspace>/target`.
fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace");
    let configured = std::env::var("CARGO_TARGET_DIR")
        .ok()
        .filter(|dir| !dir.is_empty())
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(str::to_owned));
    match configured {
        // An absolute directory replaces the workspace path in `join`.
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// A file name from a free-form label (a wait's description, a thread name).
fn file_name(label: &str) -> String {
    let mut name = String::new();
    for c in label.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '_' | '.') { c } else { '-' };
        if !(c == '-' && (name.is_empty() || name.ends_with('-'))) && name.len() < 120 {
            name.push(c);
        }
    }
    let name = name.trim_end_matches('-');
    if name.is_empty() { "screenshot".to_owned() } else { name.to_owned() }
}

/// An error chromedriver answered with (`{"value": {"error": ..., "message": ...}}`).
#[derive(Debug)]
pub struct WebDriverError {
    /// The command, e.g. `POST /element`.
    pub command: String,
    /// WebDriver's error code, e.g. `no such element`, `stale element reference`.
    pub error: String,
    pub message: String,
}

impl fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebDriver {}: {}: {}", self.command, self.error, self.message)
    }
}

impl std::error::Error for WebDriverError {}

impl WebDriverError {
    /// From the `value` of an answer, if it is an error.
    fn from_value(command: String, value: &Value) -> Option<Self> {
        let error = value["error"].as_str()?;
        // chromedriver repeats the code, and appends "(Session info: ...)" and a native stack
        // trace: noise here.
        let message = value["message"].as_str().unwrap_or_default().lines().next().unwrap_or_default();
        let message = message.strip_prefix(&format!("{error}: ")).unwrap_or(message).to_owned();
        Some(Self { command, error: error.to_owned(), message })
    }
}

/// Whether polling again may succeed where `error` failed: the element was not there yet, was
/// re-rendered, covered or not yet interactable, or the page was navigating.
fn transient(error: &anyhow::Error) -> bool {
    error.downcast_ref::<WebDriverError>().is_some_and(|error| {
        matches!(
            error.error.as_str(),
            "no such element" | "stale element reference" | "element not interactable" | "element click intercepted"
        ) || error.message.contains("context")
    })
}

/// A cookie as the browser holds it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub http_only: bool,
    #[serde(default)]
    pub secure: bool,
    /// `Strict`, `Lax` or `None`, when set.
    #[serde(default)]
    pub same_site: Option<String>,
    /// Seconds since the epoch; `None` for a session cookie.
    #[serde(default)]
    pub expiry: Option<u64>,
}

/// One entry of the browser console.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// `javascript` (an uncaught exception or rejection), `console-api` (`console.*`), `network`
    /// (a failed request), ...
    #[serde(default)]
    pub source: Option<String>,
    pub message: String,
    #[serde(default)]
    pub timestamp: i64,
}

impl LogEntry {
    /// An uncaught exception, unhandled rejection or `console.error`: what a page that works does
    /// not log. (Failed requests are not: a page may expect a 401.)
    pub fn is_error(&self) -> bool {
        self.level == "SEVERE" && self.source.as_deref() != Some("network")
    }
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} {}] {}", self.level, self.source.as_deref().unwrap_or("-"), self.message)
    }
}

/// Configures a [`Browser`] before it starts.
#[derive(Clone, Debug)]
pub struct BrowserBuilder {
    language: String,
    window: (u32, u32),
    timeout: Duration,
}

impl BrowserBuilder {
    /// The UI language and `Accept-Language` (`en-US` by default), e.g. `zh-CN`.
    pub fn language(mut self, language: &str) -> Self {
        language.clone_into(&mut self.language);
        self
    }

    /// A browser that prefers Simplified Chinese (`zh-CN`).
    pub fn chinese(self) -> Self {
        self.language("zh-CN")
    }

    /// The window size (1280×900 by default).
    pub fn window_size(mut self, width: u32, height: u32) -> Self {
        self.window = (width, height);
        self
    }

    /// How long waits poll before failing ([`DEFAULT_TIMEOUT`] by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts the browser once a slot is free.
    pub async fn start(self) -> Result<Browser> {
        let permit = take_slots(1).await?;
        Browser::launch(self, permit).await
    }

    /// Starts `count` browsers, taking their slots at once (a test that holds one browser and
    /// then starts another could wait forever for a slot held by a test doing the same).
    pub async fn start_many(self, count: u32) -> Result<Vec<Browser>> {
        let mut permits = take_slots(count).await?;
        let mut browsers = Vec::new();
        for _ in 0..count {
            let permit = permits.split(1).expect("as many slots as browsers");
            browsers.push(Browser::launch(self.clone(), permit).await?);
        }
        Ok(browsers)
    }
}

async fn take_slots(count: u32) -> Result<SemaphorePermit<'static>> {
    let (slots, semaphore) = &*SLOTS;
    if count > *slots {
        bail!("{count} browsers at once, but FASTNPC_TEST_BROWSERS allows {slots}");
    }
    tokio::time::timeout(SLOT_WAIT, semaphore.acquire_many(count))
        .await
        .map_err(|_| {
            anyhow!(
                "waited {} s for {count} of the {slots} browser slots (FASTNPC_TEST_BROWSERS): does a test hold \
                 one browser while starting another? Use BrowserBuilder::start_many",
                SLOT_WAIT.as_secs()
            )
        })?
        .context("the browser semaphore is never closed")
}

/// A headless Chromium with its own chromedriver and profile; see the module documentation.
pub struct Browser {
    http: reqwest::Client,
    port: u16,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session_url: String,
    session_id: String,
    /// Whether the session still needs ending.
    session_open: bool,
    driver: Child,
    /// The temporary directory: profile, chromedriver's log, Chromium's TMPDIR.
    dir: PathBuf,
    timeout: Duration,
    language: String,
    /// Every console entry read so far (reading chromedriver's log empties it).
    console: Mutex<Vec<LogEntry>>,
    _slot: SemaphorePermit<'static>,
}

impl Browser {
    pub fn builder() -> BrowserBuilder {
        BrowserBuilder { language: "en-US".to_owned(), window: (1280, 900), timeout: DEFAULT_TIMEOUT }
    }

    /// An English (`en-US`) browser with the default window and timeout.
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    async fn launch(options: BrowserBuilder, slot: SemaphorePermit<'static>) -> Result<Self> {
        // Short: Chromium's socket goes in a directory under it, and socket paths have a limit.
        let number = BROWSERS_STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fastnpc-browser-{}-{number}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).with_context(|| format!("create {}", dir.display()))?;
        // Chromium's own temporary files go with the rest of this browser's, unless that makes its
        // socket's path (`<TMPDIR>/org.chromium.Chromium.XXXXXX/SingletonSocket`) too long.
        let chromium_tmp = dir.join("tmp");
        let chromium_tmp = (chromium_tmp.as_os_str().len() <= 60).then_some(chromium_tmp);
        let chromedriver = env_or("FASTNPC_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let started = Instant::now();
        // A free port can be taken by another test between our probe and chromedriver's bind: then
        // chromedriver exits, and we try another.
        let mut attempt = 0;
        let (driver, port) = loop {
            attempt += 1;
            let port = free_port()?;
            let log = std::fs::File::create(dir.join("chromedriver.log")).context("chromedriver's log file")?;
            let mut command = Command::new(&chromedriver);
            // Chromium's output too, so that a browser that does not start says why.
            command.args([format!("--port={port}"), "--enable-chrome-logs".to_owned()]);
            if let Some(tmp) = &chromium_tmp {
                command.env("TMPDIR", tmp);
            }
            let driver = command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn().with_context(|| {
                format!("start {chromedriver} (set FASTNPC_TEST_CHROMEDRIVER, or run scripts/services)")
            });
            let mut driver = match driver {
                Ok(driver) => driver,
                Err(error) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(error);
                }
            };
            match wait_until_listening(&mut driver, port, &dir).await {
                Ok(()) => break (driver, port),
                Err(error) => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    if attempt >= 3 || !read_log(&dir).contains("in use") {
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(error);
                    }
                }
            }
        };
        let mut browser = Self {
            http: reqwest::Client::builder().no_proxy().timeout(COMMAND_TIMEOUT).build()?,
            port,
            session_url: String::new(),
            session_id: String::new(),
            session_open: false,
            driver,
            dir,
            timeout: options.timeout,
            language: options.language.clone(),
            console: Mutex::new(Vec::new()),
            _slot: slot,
        };
        // From here on, Drop stops chromedriver and removes the directory if anything fails.
        browser.new_session(&options).await?;
        tracing::debug!(elapsed = ?started.elapsed(), port, "browser started");
        Ok(browser)
    }

    async fn new_session(&mut self, options: &BrowserBuilder) -> Result<()> {
        let chromium = env_or("FASTNPC_TEST_CHROMIUM", "/usr/bin/chromium");
        let (width, height) = options.window;
        let language = &options.language;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            // Without these, Chromium's calls home are refused by this machine's closed network.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--window-size={width},{height}"),
            &format!("--lang={language}"),
            &format!("--user-data-dir={}", self.dir.join("profile").display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "pageLoadStrategy": "normal",
            "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 30_000},
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
                "prefs": {"intl.accept_languages": language},
            },
        }}});
        let url = format!("http://127.0.0.1:{}/session", self.port);
        let response = self.http.post(&url).json(&capabilities).send().await;
        let body: Value = match response {
            Ok(response) => response.json().await.context("chromedriver's answer to a new session")?,
            Err(error) => bail!("chromedriver did not start a session: {error}\n{}", read_log(&self.dir)),
        };
        let value = &body["value"];
        let Some(session_id) = value["sessionId"].as_str() else {
            let error = WebDriverError::from_value("POST /session".to_owned(), value)
                .map_or_else(|| format!("no session in {value}"), |error| error.to_string());
            bail!(
                "chromedriver did not start {chromium} (set FASTNPC_TEST_CHROMIUM, or run scripts/services): {error}\n{}",
                read_log(&self.dir)
            );
        };
        self.session_id = session_id.to_owned();
        self.session_url = format!("{url}/{session_id}");
        self.session_open = true;
        Ok(())
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(mut self) -> Result<()> {
        let ended = self.command(Method::DELETE, "", None).await;
        if ended.is_ok() {
            self.session_open = false;
        }
        // Drop stops chromedriver, and ends the session the hard way if that failed.
        drop(self);
        ended.map(drop)
    }

    pub fn language(&self) -> &str {
        &self.language
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes how long waits poll from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// chromedriver and Chromium's processes, running now: those under chromedriver, and those
    /// whose command line names this browser's directory (a helper can outlive its parent). For
    /// tests of cleanup.
    pub fn process_ids(&self) -> Vec<u32> {
        browser_processes(self.driver.id(), &self.dir)
    }

    /// The temporary directory holding the profile (removed when the browser closes).
    pub fn temp_dir(&self) -> &Path {
        &self.dir
    }

    // ----- WebDriver over HTTP -----

    /// Sends one command of this session (`path` after `/session/<id>`) and returns its `value`.
    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let name = format!("{method} {}", if path.is_empty() { "/session" } else { path });
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.session_url));
        if method == Method::POST {
            request = request.json(&body.unwrap_or_else(|| json!({})));
        }
        let response =
            request.send().await.with_context(|| format!("WebDriver {name}: chromedriver did not answer"))?;
        let status = response.status();
        let mut body: Value =
            response.json().await.with_context(|| format!("WebDriver {name}: not JSON (HTTP {status})"))?;
        let value = body["value"].take();
        if status.is_success() {
            return Ok(value);
        }
        match WebDriverError::from_value(name.clone(), &value) {
            Some(error) => Err(error.into()),
            None => bail!("WebDriver {name}: HTTP {status}: {value}"),
        }
    }

    fn element(&self, value: &Value, description: impl Into<String>) -> Option<Element<'_>> {
        let id = value.get(ELEMENT_KEY)?.as_str()?;
        Some(Element { browser: self, id: id.to_owned(), description: description.into() })
    }

    // ----- Navigation -----

    /// Opens `url` and waits for its load event.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.command(Method::POST, "/url", Some(json!({ "url": url }))).await.with_context(|| format!("open {url}"))?;
        Ok(())
    }

    pub async fn current_url(&self) -> Result<String> {
        let url = self.command(Method::GET, "/url", None).await?;
        url.as_str().map(str::to_owned).ok_or_else(|| anyhow!("the current URL is not a string: {url}"))
    }

    pub async fn refresh(&self) -> Result<()> {
        self.command(Method::POST, "/refresh", None).await.map(drop)
    }

    pub async fn back(&self) -> Result<()> {
        self.command(Method::POST, "/back", None).await.map(drop)
    }

    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.command(Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await.map(drop)
    }

    /// Presses and releases `key` (e.g. [`keys::TAB`]) wherever the focus is — the page itself
    /// when nothing is focused — as a keyboard would (WebDriver actions).
    pub async fn press_key(&self, key: &str) -> Result<()> {
        let strokes = json!([{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]);
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": strokes}]});
        self.command(Method::POST, "/actions", Some(actions)).await.map(drop)
    }

    /// Lays pages out as a phone of `width` × `height` CSS pixels would (a mobile viewport,
    /// through the DevTools protocol): a headless window cannot be narrower than 500 px.
    pub async fn emulate_phone(&self, width: u32, height: u32) -> Result<()> {
        let params = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": true});
        let command = json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": params});
        self.command(Method::POST, "/goog/cdp/execute", Some(command)).await.map(drop)
    }

    /// Lets pages download files, into a folder of this browser's own (removed with it), and
    /// returns that folder: [`Browser::downloaded`] reads what arrives there. (A headless Chromium
    /// refuses downloads until told where to put them, through the DevTools protocol.)
    pub async fn allow_downloads(&self) -> Result<PathBuf> {
        let folder = self.dir.join("downloads");
        std::fs::create_dir_all(&folder).with_context(|| format!("create {}", folder.display()))?;
        let params = json!({"behavior": "allow", "downloadPath": folder.display().to_string()});
        let command = json!({"cmd": "Browser.setDownloadBehavior", "params": params});
        self.command(Method::POST, "/goog/cdp/execute", Some(command)).await?;
        Ok(folder)
    }

    /// Waits until the download named `name` is complete in the [`Browser::allow_downloads`]
    /// folder (Chromium writes to a `.crdownload` file and gives it its name only at the end),
    /// then takes it out of the folder and returns its bytes.
    pub async fn downloaded(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.join("downloads").join(name);
        let path = &path;
        let bytes = self
            .poll(&format!("the download {name:?}"), || async move {
                match std::fs::read(path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(error) => Err(anyhow::Error::from(error).context(format!("read {}", path.display()))),
                }
            })
            .await?;
        std::fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
        Ok(bytes)
    }

    /// Chooses the file at `path` in the `<input type="file">` matching `css`, as picking it in the
    /// file dialog would (the input's `change` fires). The input need only be present: a file
    /// input dressed as a button is usually visually hidden.
    pub async fn choose_file(&self, css: &str, path: &Path) -> Result<()> {
        let path = std::fs::canonicalize(path).with_context(|| format!("the file {}", path.display()))?;
        let path = path.to_str().ok_or_else(|| anyhow!("{} is not UTF-8", path.display()))?;
        self.poll(&format!("`{css}` to take the file {path}"), || async move {
            match self.find_all(css).await?.into_iter().next() {
                Some(element) => element.send_keys(path).await.map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    // ----- Finding -----

    /// The first element matching `css` now (no waiting: see [`Browser::wait_for`]).
    pub async fn find(&self, css: &str) -> Result<Element<'_>> {
        let found = self.command(Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        match found {
            Ok(value) => self.element(&value, css).ok_or_else(|| anyhow!("`{css}`: not an element: {value}")),
            Err(error) => {
                let url = self.current_url().await.unwrap_or_default();
                Err(error.context(format!("no element matches `{css}` on {url}")))
            }
        }
    }

    /// Every element matching `css` now (possibly none).
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>> {
        let found =
            self.command(Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await?;
        let found = found.as_array().ok_or_else(|| anyhow!("`{css}`: not a list of elements: {found}"))?;
        Ok(found.iter().filter_map(|value| self.element(value, css)).collect())
    }

    // ----- Waiting -----

    /// Calls `attempt` every [`POLL`] until it returns `Some`, fails with a non-transient error,
    /// or the deadline passes (then fails with the page's state; see [`Browser::timed_out`]).
    async fn poll<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut last_error = None;
        loop {
            match attempt().await {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(error) if transient(&error) => last_error = Some(error),
                Err(error) => return Err(error.context(format!("while waiting for {what}"))),
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out(what, last_error).await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The error of a wait that timed out, with what a reader of a CI log needs to see why: the
    /// URL, the start of the page's text, the console, and a screenshot.
    async fn timed_out(&self, what: &str, last_error: Option<anyhow::Error>) -> anyhow::Error {
        let bounded = Duration::from_secs(10);
        let url = match tokio::time::timeout(bounded, self.current_url()).await {
            Ok(Ok(url)) => url,
            Ok(Err(error)) => format!("(unknown: {error:#})"),
            Err(_) => "(unknown: the browser did not answer)".to_owned(),
        };
        let text = match tokio::time::timeout(bounded, self.page_text()).await {
            Ok(Ok(text)) => text,
            Ok(Err(error)) => format!("(unknown: {error:#})"),
            Err(_) => "(unknown: the browser did not answer)".to_owned(),
        };
        let console = match tokio::time::timeout(bounded, self.console_log()).await {
            Ok(Ok(entries)) if entries.is_empty() => "(empty)".to_owned(),
            Ok(Ok(entries)) => entries.iter().map(|entry| format!("\n    {entry}")).collect(),
            Ok(Err(error)) => format!("(unknown: {error:#})"),
            Err(_) => "(unknown: the browser did not answer)".to_owned(),
        };
        let screenshot = match tokio::time::timeout(bounded, self.screenshot(&format!("timeout-{what}"))).await {
            Ok(Ok(path)) => path.display().to_string(),
            Ok(Err(error)) => format!("(none: {error:#})"),
            Err(_) => "(none: the browser did not answer)".to_owned(),
        };
        let last_error = last_error.map(|error| format!("\n  last error: {error:#}")).unwrap_or_default();
        anyhow!(
            "timed out after {:.1} s waiting for {what}{last_error}\n  url: {url}\n  screenshot: {screenshot}\n  \
             console: {console}\n  page text (first {PAGE_TEXT_CHARS} characters):\n{text}",
            self.timeout.as_secs_f64()
        )
    }

    async fn page_text(&self) -> Result<String> {
        let text = self.execute("return document.body ? document.body.innerText : '(no body)'", &[]).await?;
        Ok(text.as_str().unwrap_or_default().chars().take(PAGE_TEXT_CHARS).collect())
    }

    /// Waits until an element matching `css` is present and displayed, and returns it.
    pub async fn wait_for(&self, css: &str) -> Result<Element<'_>> {
        self.poll(&format!("`{css}` to be displayed"), || async move {
            let found = self.execute(&format!("{VISIBLE}\n{FIRST_VISIBLE}"), &[json!(css)]).await?;
            Ok(self.element(&found, css))
        })
        .await
    }

    /// Waits until the JavaScript expression `condition` is true (an exception counts as false,
    /// and is reported if the wait times out).
    pub async fn wait_until(&self, description: &str, condition: &str) -> Result<()> {
        let script =
            format!("try {{ return {{ok: !!({condition})}}; }} catch (error) {{ return {{threw: String(error)}}; }}");
        let last_exception = RefCell::new(String::new());
        let what = format!("{description} (`{condition}`)");
        let outcome = self
            .poll(&what, || async {
                let outcome = self.execute(&script, &[]).await?;
                if let Some(error) = outcome["threw"].as_str() {
                    error.clone_into(&mut last_exception.borrow_mut());
                }
                Ok(outcome["ok"].as_bool().unwrap_or(false).then_some(()))
            })
            .await;
        let last_exception = last_exception.into_inner();
        outcome.map_err(|error| {
            if last_exception.is_empty() {
                error
            } else {
                error.context(format!("the condition threw: {last_exception}"))
            }
        })
    }

    /// Waits until an element matching `css` has `text` in its (rendered) text, and returns it.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Result<Element<'_>> {
        let script = "const [css, text] = arguments;
            return Array.from(document.querySelectorAll(css)).find(e => (e.innerText ?? e.textContent).includes(text)) ?? null;";
        self.poll(&format!("`{css}` to show {text:?}"), || async move {
            let found = self.execute(script, &[json!(css), json!(text)]).await?;
            Ok(self.element(&found, css))
        })
        .await
    }

    /// Waits until no element matching `css` is displayed (removed or hidden).
    pub async fn wait_gone(&self, css: &str) -> Result<()> {
        self.poll(&format!("`{css}` to be gone"), || async move {
            let found = self.execute(&format!("{VISIBLE}\n{FIRST_VISIBLE}"), &[json!(css)]).await?;
            Ok(found.is_null().then_some(()))
        })
        .await
    }

    // ----- Acting on an element found by selector (each waits for it first) -----

    /// Clicks the element matching `css` once it is displayed (retrying while it is re-rendered
    /// or covered).
    pub async fn click(&self, css: &str) -> Result<()> {
        self.poll(&format!("`{css}` to be clicked"), || async move {
            match self.visible(css).await? {
                Some(element) => element.click().await.map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    /// Replaces the content of the field matching `css` with `text`, typed as a user would (so
    /// every framework sees its input events): select all, delete, type. A `\n` is typed as
    /// Shift+Enter — a line break in a textarea, not the Enter a chat box takes as "send" (for
    /// that, see [`Browser::press_enter`]). Any Unicode text, Chinese included, arrives as is.
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let newline = format!("{}{}{}", keys::SHIFT, keys::ENTER, keys::NULL);
        let typed = text.replace("\r\n", "\n").replace('\n', &newline);
        let typed = &format!("{}a{}{}{typed}", keys::CONTROL, keys::NULL, keys::BACKSPACE);
        self.poll(&format!("`{css}` to be typed into"), || async move {
            match self.visible(css).await? {
                Some(element) => element.send_keys(typed).await.map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    /// Presses Enter in the element matching `css`.
    pub async fn press_enter(&self, css: &str) -> Result<()> {
        self.poll(&format!("`{css}` to take Enter"), || async move {
            match self.visible(css).await? {
                Some(element) => element.send_keys(keys::ENTER).await.map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    /// The rendered text of the element matching `css`, once it is displayed.
    pub async fn text(&self, css: &str) -> Result<String> {
        self.poll(&format!("the text of `{css}`"), || async move {
            match self.visible(css).await? {
                Some(element) => element.text().await.map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    /// An attribute of the element matching `css`, once it is present (`None`: no such attribute).
    pub async fn attribute(&self, css: &str, name: &str) -> Result<Option<String>> {
        self.poll(&format!("attribute `{name}` of `{css}`"), || async move {
            match self.find_all(css).await?.into_iter().next() {
                Some(element) => element.attribute(name).await.map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    /// A DOM property of the element matching `css` (e.g. `value`, `checked`), once it is present.
    pub async fn property(&self, css: &str, name: &str) -> Result<Value> {
        self.poll(&format!("property `{name}` of `{css}`"), || async move {
            match self.find_all(css).await?.into_iter().next() {
                Some(element) => element.property(name).await.map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    /// The first displayed element matching `css`, if any, now.
    async fn visible(&self, css: &str) -> Result<Option<Element<'_>>> {
        let found = self.execute(&format!("{VISIBLE}\n{FIRST_VISIBLE}"), &[json!(css)]).await?;
        Ok(self.element(&found, css))
    }

    // ----- Scripts, cookies, console, screenshots -----

    /// Runs `script` (a function body: `return` its result; `arguments` are `args`, which may be
    /// [`Element::as_arg`]s) and returns its result.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.command(Method::POST, "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// Runs an asynchronous `script`: it gets a callback as its last argument and finishes by
    /// calling it with its result (within 30 s).
    pub async fn execute_async(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.command(Method::POST, "/execute/async", Some(json!({"script": script, "args": args}))).await
    }

    /// The cookies of the current page's site.
    pub async fn cookies(&self) -> Result<Vec<Cookie>> {
        let cookies = self.command(Method::GET, "/cookie", None).await?;
        serde_json::from_value(cookies).context("cookies as WebDriver describes them")
    }

    /// The browser console so far: everything logged since the browser started, across pages.
    pub async fn console_log(&self) -> Result<Vec<LogEntry>> {
        let new = self.command(Method::POST, "/se/log", Some(json!({"type": "browser"}))).await?;
        let new: Vec<LogEntry> = serde_json::from_value(new).context("the browser log")?;
        let mut console = self.console.lock().expect("the console lock is not poisoned");
        console.extend(new);
        Ok(console.clone())
    }

    /// The uncaught exceptions, unhandled rejections and `console.error`s so far ([`LogEntry::is_error`]).
    pub async fn console_errors(&self) -> Result<Vec<LogEntry>> {
        Ok(self.console_log().await?.into_iter().filter(LogEntry::is_error).collect())
    }

    /// Fails, listing them, if the pages so far logged errors ([`Browser::console_errors`]).
    pub async fn assert_no_console_errors(&self) -> Result<()> {
        let errors = self.console_errors().await?;
        if !errors.is_empty() {
            let list: String = errors.iter().map(|entry| format!("\n  {entry}")).collect();
            bail!("the browser console has {} error(s):{list}", errors.len());
        }
        Ok(())
    }

    /// Saves a screenshot of the window as `<screenshot_dir()>/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self.command(Method::GET, "/screenshot", None).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().ok_or_else(|| anyhow!("a screenshot that is not a string"))?)
            .context("a screenshot that is not base64")?;
        save_screenshot(name, &png)
    }
}

fn save_screenshot(name: &str, png: &[u8]) -> Result<PathBuf> {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(format!("{}.png", file_name(name)));
    std::fs::write(&path, png).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// A JavaScript `visible(element)`: rendered, with a box, not hidden by CSS.
const VISIBLE: &str = "const visible = e => e.getClientRects().length > 0
    && e.checkVisibility({opacityProperty: true, visibilityProperty: true, checkOpacity: true, checkVisibilityCSS: true});";
/// With [`VISIBLE`]: the first displayed element matching `arguments[0]`, or null.
const FIRST_VISIBLE: &str = "return Array.from(document.querySelectorAll(arguments[0])).find(visible) ?? null;";

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session_open {
            let endpoint = format!("/session/{}", self.session_id);
            if std::thread::panicking() {
                // The test failed: leave a picture of where it was.
                let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
                if let Ok((200, body)) = blocking_http(self.port, "GET", &format!("{endpoint}/screenshot")) {
                    let png = serde_json::from_slice::<Value>(&body).ok().and_then(|body| {
                        base64::engine::general_purpose::STANDARD.decode(body["value"].as_str()?).ok()
                    });
                    if let Some(path) = png.and_then(|png| save_screenshot(&format!("panic-{thread}"), &png).ok()) {
                        eprintln!("browser: screenshot of the page when {thread} panicked: {}", path.display());
                    }
                }
            }
            let ended = matches!(blocking_http(self.port, "DELETE", &endpoint), Ok((200, _)));
            if !ended {
                // chromedriver did not end it: take Chromium down ourselves.
                let driver = self.driver.id();
                kill(
                    &browser_processes(driver, &self.dir).into_iter().filter(|&pid| pid != driver).collect::<Vec<_>>(),
                );
            }
        }
        let family = self.process_ids();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium's processes take a moment to end (longer for helpers orphaned by a failed
        // start); wait for them, so that none is left and none writes into the directory after it
        // is removed, and kill those that outlive a deadline.
        let mut deadline = Instant::now() + Duration::from_secs(5);
        let mut killed = false;
        loop {
            let mut left: Vec<u32> = family.iter().copied().filter(|&pid| is_running(pid)).collect();
            left.extend(browser_processes(0, &self.dir));
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                if killed {
                    eprintln!("browser: processes {left:?} of {} outlived SIGKILL", self.dir.display());
                    break;
                }
                kill(&left);
                killed = true;
                deadline = Instant::now() + Duration::from_secs(2);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends SIGKILL to `pids`: with the shell's `kill`, as std can signal only its own children and
/// the procps `kill` is not on every machine.
fn kill(pids: &[u32]) {
    if !pids.is_empty() {
        let _ = Command::new("sh")
            .args(["-c", "kill -KILL \"$@\" 2>/dev/null", "sh"])
            .args(pids.iter().map(u32::to_string))
            .status();
    }
}

/// One HTTP/1.1 request to chromedriver without an async runtime (for Drop): status and body.
fn blocking_http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_secs(1))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    // Chromium takes a moment to quit; a loaded machine, a few more.
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    let mut buffer = [0; 64 * 1024];
    loop {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        response.extend_from_slice(&buffer[..read]);
        if let Some((status, body)) = complete_response(&response) {
            return Ok((status, body.to_vec()));
        }
    }
    complete_response(&response)
        .map(|(status, body)| (status, body.to_vec()))
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "an incomplete HTTP response"))
}

/// The status and body of `response` once it holds a whole response (by its Content-Length).
fn complete_response(response: &[u8]) -> Option<(u16, &[u8])> {
    let header_end = response.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&response[..header_end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let body = response.get(header_end..header_end + length)?;
    Some((status, body))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("find a free port")?.local_addr()?.port())
}

/// The end of what chromedriver and Chromium wrote (start-up failures are explained there).
fn read_log(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    format!("chromedriver's and Chromium's output (the last 60 lines):\n{tail}")
}

/// Waits until our chromedriver says it listens and answers `GET /status` as ready. Its own log
/// line, not just an answer on the port: another test's chromedriver could be on it.
async fn wait_until_listening(driver: &mut Child, port: u16, dir: &Path) -> Result<()> {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + DRIVER_START;
    loop {
        if let Some(status) = driver.try_wait()? {
            bail!("chromedriver exited ({status}) before listening on port {port}\n{}", read_log(dir));
        }
        if read_log(dir).contains("started successfully")
            && let Ok(response) = http.get(format!("http://127.0.0.1:{port}/status")).send().await
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == true
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "chromedriver did not report ready on port {port} within {} s\n{}",
                DRIVER_START.as_secs(),
                read_log(dir)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The running processes (zombies excluded) of a browser: `driver` (if not 0) and every process
/// under it, and every process whose command line names `dir` (Chromium's are given
/// `--user-data-dir=<dir>/profile`) and every process under those.
fn browser_processes(driver: u32, dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let needle = format!("{}/", dir.display());
    // (pid, parent pid, names dir) of every running process.
    let processes: Vec<(u32, u32, bool)> = entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (command) state ppid ...`; the command may hold spaces and parentheses.
            let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
            if matches!(fields.next()?, "Z" | "X") {
                return None;
            }
            let parent = fields.next()?.parse().ok()?;
            let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            Some((pid, parent, String::from_utf8_lossy(&command_line).contains(&needle)))
        })
        .collect();
    let mut family: Vec<u32> =
        processes.iter().filter(|&&(pid, _, named)| named || (driver != 0 && pid == driver)).map(|p| p.0).collect();
    let mut next = 0;
    while next < family.len() {
        let parent = family[next];
        let children: Vec<u32> =
            processes.iter().filter(|&&(pid, p, _)| p == parent && !family.contains(&pid)).map(|p| p.0).collect();
        family.extend(children);
        next += 1;
    }
    family
}

/// Whether `pid` is a running process (not gone, not a zombie waiting to be reaped).
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, None | Some("Z" | "X"))
    })
}

/// An element of the page, as WebDriver refers to it. It goes stale when the page re-renders it;
/// the selector-based methods of [`Browser`] find it again instead.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
    /// The selector it was found by, for error messages.
    description: String,
}

impl fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Element(`{}`, {})", self.description, self.id)
    }
}

impl Element<'_> {
    fn path(&self, tail: &str) -> String {
        format!("/element/{}{tail}", self.id)
    }

    /// This element as an argument of [`Browser::execute`].
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    /// Clicks it as a user would (scrolled into view, at its centre).
    pub async fn click(&self) -> Result<()> {
        let clicked = self.browser.command(Method::POST, &self.path("/click"), None).await;
        clicked.map(drop).with_context(|| format!("click `{}`", self.description))
    }

    /// Its rendered text.
    pub async fn text(&self) -> Result<String> {
        let text = self.browser.command(Method::GET, &self.path("/text"), None).await;
        let text = text.with_context(|| format!("the text of `{}`", self.description))?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// An attribute (`None`: it has none of that name).
    pub async fn attribute(&self, name: &str) -> Result<Option<String>> {
        let value = self.browser.command(Method::GET, &self.path(&format!("/attribute/{name}")), None).await;
        let value = value.with_context(|| format!("attribute `{name}` of `{}`", self.description))?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// A DOM property, e.g. `value`.
    pub async fn property(&self, name: &str) -> Result<Value> {
        let value = self.browser.command(Method::GET, &self.path(&format!("/property/{name}")), None).await;
        value.with_context(|| format!("property `{name}` of `{}`", self.description))
    }

    /// Whether it is displayed (WebDriver's judgement).
    pub async fn is_displayed(&self) -> Result<bool> {
        let shown = self.browser.command(Method::GET, &self.path("/displayed"), None).await;
        Ok(shown.with_context(|| format!("whether `{}` is displayed", self.description))?.as_bool() == Some(true))
    }

    /// Types `keys` into it as WebDriver does: focused first, [`keys`] as special keys, `\n` as
    /// Enter. (For replacing a field's content, see [`Browser::type_into`].)
    pub async fn send_keys(&self, keys: &str) -> Result<()> {
        let sent = self.browser.command(Method::POST, &self.path("/value"), Some(json!({ "text": keys }))).await;
        sent.map(drop).with_context(|| format!("type into `{}`", self.description))
    }
}
