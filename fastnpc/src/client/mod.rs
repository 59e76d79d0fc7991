//! The command-line client: `fastnpc login`, `create`, `say`, `chat`, `group`, `characters`,
//! `jobs`, … against
//! any FastNPC API (the embedded one or a distributed deployment), for people at a terminal and
//! for scripts.
//!
//! - Credentials: `fastnpc login` stores the server and a session token in
//!   `$FASTNPC_CONFIG_DIR` (else `$XDG_CONFIG_HOME/fastnpc`, else `~/.config/fastnpc`),
//!   `credentials.json`, readable by the user only (0600). `FASTNPC_SERVER` and `FASTNPC_TOKEN`
//!   (an API key works) take precedence, for scripts and CI.
//! - Output: readable text on a terminal, with live progress drawn only when stderr is a terminal;
//!   `--json` prints the API's JSON for scripts. Colours and bars follow `NO_COLOR` and the
//!   terminal (indicatif draws nothing when stderr is not one).
//! - Exit codes mean something ([`Exit`]): 0 done, 1 the server or the network failed, 2 bad
//!   usage or input, 3 not logged in, 4 no such thing, 5 the job failed or was cancelled, 6 the
//!   name is ambiguous (the candidates are printed).
//! - Live progress comes from the job's event stream ([`sse`]), resumed with `Last-Event-ID`
//!   after a dropped connection, so nothing is missed or shown twice.

pub mod sse;

use std::{io::IsTerminal, path::PathBuf, time::Duration};

use anyhow::Context;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How often a dropped event stream is reopened before the client gives up.
const STREAM_RECONNECTS: u32 = 10;

/// The client's subcommands (flattened into `fastnpc`'s).
#[derive(clap::Subcommand)]
pub enum ClientCommand {
    /// Log in to a FastNPC server and remember the session.
    Login {
        /// The server's address, e.g. http://127.0.0.1:8080.
        #[arg(long, env = "FASTNPC_SERVER")]
        server: String,
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// End the remembered session and forget it.
    Logout,
    /// Show who is logged in.
    Whoami {
        #[arg(long)]
        json: bool,
    },
    /// Create a character and follow its generation live, then show it.
    Create(CreateArgs),
    /// Send one message to a character and print its reply as it is written.
    Say {
        /// The character's id.
        character: String,
        message: String,
        /// Print the stored reply as JSON when it is complete, instead of streaming it.
        #[arg(long)]
        json: bool,
    },
    /// Talk with a character: each line you type is sent and the reply printed as it is written
    /// (line editing and history; Ctrl-D ends).
    Chat {
        /// The character's id.
        character: String,
    },
    /// Create a group of characters, list groups, or speak in one and follow its turns live.
    #[command(subcommand)]
    Group(GroupCommand),
    /// List, show, delete, export or import characters (also as Character Cards).
    #[command(subcommand)]
    Characters(CharactersCommand),
    /// Show, cancel or retry a job.
    #[command(subcommand)]
    Jobs(JobsCommand),
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true))]
pub struct CreateArgs {
    /// The character's name.
    name: String,
    /// Build it from this text.
    #[arg(long, group = "source")]
    text: Option<String>,
    /// Build it from this file's text.
    #[arg(long, group = "source")]
    file: Option<PathBuf>,
    /// Build it from this Wikipedia article (see --lang).
    #[arg(long, group = "source", value_name = "TITLE")]
    wikipedia: Option<String>,
    /// The Wikipedia edition.
    #[arg(long, default_value = "zh", requires = "wikipedia")]
    lang: String,
    /// Build it from this Baidu Baike lemma (see --id).
    #[arg(long, group = "source", value_name = "TITLE")]
    baike: Option<String>,
    /// Which meaning of a polysemous Baike lemma.
    #[arg(long, requires = "baike")]
    id: Option<String>,
    /// Build it from this web page.
    #[arg(long, group = "source")]
    url: Option<String>,
    /// The character's language (`zh` or `en`); from the source when absent.
    #[arg(long)]
    language: Option<String>,
    /// Print the character as JSON when it is ready, and no progress.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub enum GroupCommand {
    /// Create a group of your characters.
    Create {
        name: String,
        /// A member's character id (repeat for each).
        #[arg(long = "member", required = true, value_name = "CHARACTER")]
        members: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List your groups.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Say something in a group and follow the turns it starts: who speaks, and what they say as
    /// they say it.
    Say { group: String, message: String },
}

#[derive(clap::Subcommand)]
pub enum CharactersCommand {
    /// List your characters, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a character's profile.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a character and its conversations.
    Delete { id: String },
    /// Write a character, its memories and its whole conversation as one JSON document.
    Export {
        id: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Write a character as a Character Card (the format of SillyTavern and other character-chat
    /// apps): a JSON file, or a PNG image with the card inside.
    Card {
        id: String,
        #[arg(long, value_enum, default_value_t = CardFormat::Json)]
        format: CardFormat,
        /// The card spec: V2 is read by every app, V3 is the newer one.
        #[arg(long, value_enum, default_value_t = CardSpec::V2)]
        spec: CardSpec,
        /// Write to this file (`-`: standard output). Default: `<name>.card.json` or
        /// `<name>.card.png` in the current folder, which must not exist yet.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Create a character from a Character Card file (V1, V2 or V3; PNG or JSON, at most 1 MB):
    /// ready at once, no generation. Prints its id and name.
    Import {
        file: std::path::PathBuf,
        /// Print the API's answer (the character) as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The container of a Character Card.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CardFormat {
    Json,
    Png,
}

/// The Character Card spec.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CardSpec {
    V2,
    V3,
}

#[derive(clap::Subcommand)]
pub enum JobsCommand {
    /// List your jobs, newest first.
    List {
        /// Only jobs in this state (queued, running, succeeded, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only jobs of this kind (generate_character, chat_reply, group_turn, compress_memory, …).
        #[arg(long)]
        kind: Option<String>,
        /// How many (1 to 200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show a job's status, progress, result or error.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job.
    Cancel { id: String },
    /// Retry a failed or cancelled job, following it live.
    Retry { id: String },
}

/// A failure with the exit code that says what kind it is.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Runs a client command; `Err` carries the exit code.
pub async fn run(command: ClientCommand) -> Result<(), Exit> {
    dispatch(command).await.map_err(|error| match error.downcast::<Exit>() {
        Ok(exit) => exit,
        Err(other) => Exit::new(1, format!("{other:#}")),
    })
}

async fn dispatch(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Login { server, username, password_stdin } => login(&server, &username, password_stdin).await,
        ClientCommand::Logout => logout().await,
        ClientCommand::Whoami { json } => {
            let client = Client::from_saved()?;
            let me = client.call(Method::GET, "/v1/me", None).await?;
            print_or(json, &me, || format!("{} ({})", me["user"]["username"].as_str().unwrap_or("?"), client.server))
        }
        ClientCommand::Create(args) => create(&Client::from_saved()?, args).await,
        ClientCommand::Say { character, message, json } => {
            say(&Client::from_saved()?, &character, &message, json).await
        }
        ClientCommand::Chat { character } => chat(&Client::from_saved()?, &character).await,
        ClientCommand::Group(command) => group(&Client::from_saved()?, command).await,
        ClientCommand::Characters(command) => characters(&Client::from_saved()?, command).await,
        ClientCommand::Jobs(command) => jobs(&Client::from_saved()?, command).await,
    }
}

#[derive(Serialize, Deserialize)]
struct Credentials {
    server: String,
    token: String,
}

fn config_dir() -> anyhow::Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    var("FASTNPC_CONFIG_DIR")
        .or_else(|| var("XDG_CONFIG_HOME").map(|dir| dir.join("fastnpc")))
        .or_else(|| var("HOME").map(|home| home.join(".config/fastnpc")))
        .context("no configuration folder: set FASTNPC_CONFIG_DIR or HOME")
}

fn credentials_file() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("credentials.json"))
}

/// Writes the credentials readable by the user only (the token is a password's equal).
fn save_credentials(credentials: &Credentials) -> anyhow::Result<PathBuf> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let path = credentials_file()?;
    std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    file.write_all(&serde_json::to_vec_pretty(credentials)?)?;
    Ok(path)
}

/// An API client with a session.
struct Client {
    server: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    fn new(server: &str, token: String) -> Self {
        Self { server: server.trim_end_matches('/').to_owned(), token, http: reqwest::Client::new() }
    }

    /// The session from `FASTNPC_SERVER`/`FASTNPC_TOKEN`, else from `fastnpc login`.
    fn from_saved() -> anyhow::Result<Self> {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let saved =
            || -> Option<Credentials> { serde_json::from_slice(&std::fs::read(credentials_file().ok()?).ok()?).ok() };
        match (env("FASTNPC_SERVER"), env("FASTNPC_TOKEN")) {
            (Some(server), Some(token)) => Ok(Self::new(&server, token)),
            (server, token) => {
                let saved = saved();
                let server = server.or_else(|| saved.as_ref().map(|c| c.server.clone()));
                let token = token.or_else(|| saved.map(|c| c.token));
                match (server, token) {
                    (Some(server), Some(token)) => Ok(Self::new(&server, token)),
                    _ => Err(Exit::new(3, "not logged in: run `fastnpc login --server URL --username NAME`").into()),
                }
            }
        }
    }

    /// One API call; a problem document becomes an [`Exit`] with its detail.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.server)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach {}", self.server))?;
        answer(response).await
    }

    /// A call whose body is `bytes` as they are (a file), answered with JSON.
    async fn send_file(&self, path: &str, bytes: Vec<u8>, content_type: &str) -> anyhow::Result<Value> {
        let request = self
            .http
            .post(format!("{}{path}", self.server))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        let response = request.send().await.with_context(|| format!("cannot reach {}", self.server))?;
        answer(response).await
    }

    /// A `GET` answered with a file: its bytes, or the problem as an [`Exit`].
    async fn download(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let request = self.http.get(format!("{}{path}", self.server)).bearer_auth(&self.token);
        let response = request.send().await.with_context(|| format!("cannot reach {}", self.server))?;
        if !response.status().is_success() {
            answer(response).await?;
            anyhow::bail!("the server answered no file");
        }
        Ok(response.bytes().await.with_context(|| format!("reading the answer of {}", self.server))?.to_vec())
    }
}

/// The JSON of a successful answer, or the problem as an [`Exit`].
async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    if status == StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let detail = body["detail"].as_str().unwrap_or_else(|| status.canonical_reason().unwrap_or("error")).to_owned();
    let code = match status {
        StatusCode::UNAUTHORIZED => 3,
        StatusCode::NOT_FOUND => 4,
        StatusCode::CONFLICT if body["candidates"].is_array() => {
            let mut message = format!("{detail}\n");
            for candidate in body["candidates"].as_array().into_iter().flatten() {
                let id = candidate["id"].as_str().map(|id| format!(" --id {id}")).unwrap_or_default();
                message.push_str(&format!(
                    "  {}{id}  {}  {}\n",
                    candidate["title"].as_str().unwrap_or_default(),
                    candidate["description"].as_str().unwrap_or_default(),
                    candidate["url"].as_str().unwrap_or_default()
                ));
            }
            return Err(Exit::new(6, message.trim_end()).into());
        }
        status if status.is_client_error() => 2,
        _ => 1,
    };
    let message = if code == 3 { format!("{detail} (run `fastnpc login`)") } else { detail };
    Err(Exit::new(code, message).into())
}

async fn login(server: &str, username: &str, password_stdin: bool) -> anyhow::Result<()> {
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        rpassword::prompt_password(format!("password for {username}: "))?
    };
    let server = server.trim_end_matches('/');
    let response = reqwest::Client::new()
        .post(format!("{server}/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let session = answer(response).await?;
    let token = session["token"].as_str().context("the server answered no token")?.to_owned();
    let path = save_credentials(&Credentials { server: server.to_owned(), token })?;
    eprintln!("logged in to {server} as {username} (session kept in {})", path.display());
    Ok(())
}

async fn logout() -> anyhow::Result<()> {
    let client = Client::from_saved()?;
    client.call(Method::POST, "/v1/auth/logout", None).await?;
    let _ = std::fs::remove_file(credentials_file()?);
    eprintln!("logged out of {}", client.server);
    Ok(())
}

fn print_or(json: bool, value: &Value, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

async fn create(client: &Client, args: CreateArgs) -> anyhow::Result<()> {
    let source = match (&args.text, &args.file, &args.wikipedia, &args.baike, &args.url) {
        (Some(text), ..) => json!({"kind": "text", "text": text}),
        (_, Some(file), ..) => json!({"kind": "text", "text": std::fs::read_to_string(file)
            .map_err(|error| Exit::new(2, format!("cannot read {}: {error}", file.display())))?}),
        (_, _, Some(title), ..) => json!({"kind": "wikipedia", "lang": args.lang, "title": title}),
        (_, _, _, Some(title), _) => json!({"kind": "baike", "title": title, "id": args.id}),
        (.., Some(url)) => json!({"kind": "url", "url": url}),
        _ => return Err(Exit::new(2, "name a source").into()),
    };
    let mut body = json!({"name": args.name, "source": source});
    if let Some(language) = &args.language {
        body["language"] = json!(language);
    }
    let created = client.call(Method::POST, "/v1/characters", Some(&body)).await?;
    let job_id = created["job"]["id"].as_str().context("no job in the answer")?.to_owned();
    let character_id = created["character"]["id"].as_str().context("no character in the answer")?.to_owned();
    follow_generation(client, &job_id, !args.json).await?;
    let character = client.call(Method::GET, &format!("/v1/characters/{character_id}"), None).await?;
    print_or(args.json, &character, || describe_character(&character["character"]))
}

/// Follows a generation job to its end, drawing its progress when `draw` and stderr is a
/// terminal; a failed or cancelled job is an [`Exit`] 5.
async fn follow_generation(client: &Client, job_id: &str, draw: bool) -> anyhow::Result<()> {
    let bar = if draw && std::io::stderr().is_terminal() { ProgressBar::new(9) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:<28} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message("queued");
    let outcome = follow(client, job_id, |event| match event.event.as_str() {
        "status" => bar.set_message(event.data["status"].as_str().unwrap_or_default().to_owned()),
        "progress" => {
            bar.set_length(event.data["total"].as_u64().unwrap_or(9));
            bar.set_position(event.data["done"].as_u64().unwrap_or(0));
            let step = event.data["step"].as_str().unwrap_or_default();
            bar.set_message(if step == "fetching" {
                "fetching the source".to_owned()
            } else {
                format!("wrote {step}")
            });
        }
        _ => {}
    })
    .await;
    bar.finish_and_clear();
    outcome
}

/// Reads a job's events until its terminal one, reopening the stream after the last id seen
/// when the connection drops; `on_event` sees each event once.
async fn follow(client: &Client, job_id: &str, mut on_event: impl FnMut(&sse::SseEvent)) -> anyhow::Result<()> {
    let mut last_id: Option<u64> = None;
    let mut reconnects = 0;
    loop {
        let mut request =
            client.http.get(format!("{}/v1/jobs/{job_id}/events", client.server)).bearer_auth(&client.token);
        if let Some(id) = last_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let opened = match request.send().await {
            Ok(response) if response.status().is_success() => Ok(response),
            Ok(response) => return answer(response).await.map(drop),
            Err(error) => Err(anyhow::Error::from(error)),
        };
        if let Ok(response) = opened {
            let mut events = sse::events(response);
            while let Some(Ok(event)) = events.next().await {
                last_id = event.id.or(last_id);
                on_event(&event);
                match event.event.as_str() {
                    "succeeded" => return Ok(()),
                    "failed" => {
                        let code = event.data["code"].as_str().unwrap_or("failed");
                        let message = event.data["message"].as_str().unwrap_or_default();
                        return Err(Exit::new(5, format!("the job failed ({code}): {message}")).into());
                    }
                    "cancelled" => return Err(Exit::new(5, "the job was cancelled").into()),
                    _ => {}
                }
            }
        }
        reconnects += 1;
        if reconnects > STREAM_RECONNECTS {
            return Err(Exit::new(
                1,
                format!("lost the job's event stream; follow it with `fastnpc jobs show {job_id}`"),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250 * u64::from(reconnects.min(8)))).await;
    }
}

/// A profile, readable: the brief, then each category's fields.
fn describe_character(character: &Value) -> String {
    let mut text = format!(
        "{}  ({}, {})\n",
        character["name"].as_str().unwrap_or_default(),
        character["id"].as_str().unwrap_or_default(),
        character["status"].as_str().unwrap_or_default()
    );
    if let Some(brief) = character["brief"].as_str() {
        text.push_str(&format!("\n{brief}\n"));
    }
    for (category, fields) in character["profile"].as_object().into_iter().flatten() {
        text.push_str(&format!("\n[{category}]\n"));
        for (field, value) in fields.as_object().into_iter().flatten() {
            let value = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            if !value.is_empty() {
                text.push_str(&format!("  {field}: {value}\n"));
            }
        }
    }
    if let Some(url) = character["source_snapshot"]["url"].as_str() {
        text.push_str(&format!("\nbuilt from {url}\n"));
    }
    text.trim_end().to_owned()
}

async fn say(client: &Client, character: &str, message: &str, json: bool) -> anyhow::Result<()> {
    let job_id = send(client, character, message).await?;
    if json {
        follow(client, &job_id, |_| {}).await?;
        let job = client.call(Method::GET, &format!("/v1/jobs/{job_id}"), None).await?;
        println!("{}", serde_json::to_string_pretty(&job["job"]["result"])?);
        return Ok(());
    }
    print_reply(client, &job_id).await
}

/// Sends a message to a character; returns the reply's job.
async fn send(client: &Client, character: &str, message: &str) -> anyhow::Result<String> {
    let sent = client
        .call(Method::POST, &format!("/v1/characters/{character}/messages"), Some(&json!({"content": message})))
        .await?;
    Ok(sent["job"]["id"].as_str().context("no job in the answer")?.to_owned())
}

/// Prints a reply as it is written, then a newline.
async fn print_reply(client: &Client, job_id: &str) -> anyhow::Result<()> {
    let mut shown = false;
    follow(client, job_id, |event| match event.event.as_str() {
        "token" => {
            shown = true;
            write_now(event.data["text"].as_str().unwrap_or_default());
        }
        // The model's stream broke and the reply starts over: say so, on a new line.
        "reset" if shown => {
            shown = false;
            println!("\n[the reply restarts]");
        }
        _ => {}
    })
    .await?;
    println!();
    Ok(())
}

fn write_now(text: &str) {
    print!("{text}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

async fn chat(client: &Client, character: &str) -> anyhow::Result<()> {
    use rustyline::error::ReadlineError;
    let shown = client.call(Method::GET, &format!("/v1/characters/{character}"), None).await?;
    let name = shown["character"]["name"].as_str().unwrap_or("?").to_owned();
    eprintln!("talking with {name}; Ctrl-D ends");
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = config_dir()?.join("chat-history");
    let _ = editor.load_history(&history);
    loop {
        // Reading a line blocks on the terminal: off the async threads' duty.
        let line = tokio::task::block_in_place(|| editor.readline("> "));
        match line {
            Ok(line) if line.trim().is_empty() => {}
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                let job_id = send(client, character, &line).await?;
                write_now(&format!("{name}: "));
                print_reply(client, &job_id).await?;
            }
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => break,
            Err(error) => return Err(error.into()),
        }
    }
    if let Some(folder) = history.parent() {
        let _ = std::fs::create_dir_all(folder);
    }
    let _ = editor.save_history(&history);
    Ok(())
}

async fn group(client: &Client, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create { name, members, json } => {
            let created =
                client.call(Method::POST, "/v1/groups", Some(&json!({"name": name, "character_ids": members}))).await?;
            print_or(json, &created, || created["group"]["id"].as_str().unwrap_or_default().to_owned())
        }
        GroupCommand::List { json } => {
            let listed = client.call(Method::GET, "/v1/groups", None).await?;
            print_or(json, &listed["items"], || {
                let rows: Vec<String> = listed["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| {
                        format!("{}  {}", g["id"].as_str().unwrap_or_default(), g["name"].as_str().unwrap_or_default())
                    })
                    .collect();
                if rows.is_empty() { "no groups yet".to_owned() } else { rows.join("\n") }
            })
        }
        GroupCommand::Say { group, message } => {
            let sent = client
                .call(Method::POST, &format!("/v1/groups/{group}/messages"), Some(&json!({"content": message})))
                .await?;
            let job_id = sent["job"]["id"].as_str().context("no job in the answer")?.to_owned();
            let mut speaking = false;
            follow(client, &job_id, |event| match event.event.as_str() {
                "speaker" => {
                    if speaking {
                        println!();
                    }
                    speaking = true;
                    write_now(&format!("{}: ", event.data["name"].as_str().unwrap_or("?")));
                }
                "token" => write_now(event.data["text"].as_str().unwrap_or_default()),
                "reset" => write_now("\n[the reply restarts] "),
                "waiting" => {
                    println!();
                    speaking = false;
                    eprintln!("[your turn: {}]", event.data["reason"].as_str().unwrap_or_default());
                }
                _ => {}
            })
            .await?;
            if speaking {
                println!();
            }
            Ok(())
        }
    }
}

async fn characters(client: &Client, command: CharactersCommand) -> anyhow::Result<()> {
    match command {
        CharactersCommand::List { json } => {
            let listed = client.call(Method::GET, "/v1/characters?limit=200", None).await?;
            print_or(json, &listed["items"], || {
                let rows: Vec<String> = listed["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        format!(
                            "{}  {:<10}  {}",
                            c["id"].as_str().unwrap_or_default(),
                            c["status"].as_str().unwrap_or_default(),
                            c["name"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                if rows.is_empty() { "no characters yet".to_owned() } else { rows.join("\n") }
            })
        }
        CharactersCommand::Show { id, json } => {
            let shown = client.call(Method::GET, &format!("/v1/characters/{id}"), None).await?;
            print_or(json, &shown, || describe_character(&shown["character"]))
        }
        CharactersCommand::Delete { id } => {
            client.call(Method::DELETE, &format!("/v1/characters/{id}"), None).await?;
            eprintln!("deleted {id}");
            Ok(())
        }
        CharactersCommand::Export { id, output } => {
            let document = export(client, &id).await?;
            let text = serde_json::to_string_pretty(&document)? + "\n";
            match output {
                Some(path) => {
                    std::fs::write(&path, text)
                        .map_err(|error| Exit::new(1, format!("cannot write {}: {error}", path.display())))?;
                    eprintln!("exported {id} to {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        CharactersCommand::Card { id, format, spec, output } => card(client, &id, format, spec, output).await,
        CharactersCommand::Import { file, json } => {
            let bytes = std::fs::read(&file)
                .map_err(|error| Exit::new(2, format!("cannot read {}: {error}", file.display())))?;
            // The server reads the file by its content; the type only says what it is.
            let content_type = if bytes.starts_with(b"\x89PNG") { "image/png" } else { "application/json" };
            let created = client.send_file("/v1/characters/import", bytes, content_type).await?;
            let character = &created["character"];
            print_or(json, &created, || {
                format!(
                    "{}  {}",
                    character["id"].as_str().unwrap_or_default(),
                    character["name"].as_str().unwrap_or_default()
                )
            })
        }
    }
}

/// `characters card`: the card file, written to `output` or to `<name>.card.<format>`.
async fn card(
    client: &Client,
    id: &str,
    format: CardFormat,
    spec: CardSpec,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (format, extension) = match format {
        CardFormat::Json => ("json", "json"),
        CardFormat::Png => ("png", "png"),
    };
    let spec = match spec {
        CardSpec::V2 => "v2",
        CardSpec::V3 => "v3",
    };
    let path = match output {
        Some(path) => path,
        None => {
            let shown = client.call(Method::GET, &format!("/v1/characters/{id}"), None).await?;
            let path =
                PathBuf::from(card_file_name(shown["character"]["name"].as_str().unwrap_or_default(), extension));
            if path.exists() {
                return Err(Exit::new(2, format!("{} exists; name another file with -o", path.display())).into());
            }
            path
        }
    };
    let bytes = client.download(&format!("/v1/characters/{id}/card?format={format}&spec={spec}")).await?;
    if path.as_os_str() == "-" {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&bytes)?;
        stdout.flush()?;
        return Ok(());
    }
    std::fs::write(&path, &bytes).map_err(|error| Exit::new(1, format!("cannot write {}: {error}", path.display())))?;
    println!("{}", path.display());
    Ok(())
}

/// `<name>.card.<extension>`, with what a file name cannot hold (a path separator, a control
/// character) replaced, as the web app names its downloads.
fn card_file_name(name: &str, extension: &str) -> String {
    let safe: String =
        name.chars()
            .map(|c| {
                if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
    let safe = safe.trim_matches(|c: char| c.is_whitespace() || c == '.');
    let safe: String = safe.chars().take(100).collect();
    format!("{}.card.{extension}", if safe.is_empty() { "character" } else { &safe })
}

/// `{character, memories, messages}`: the character as `GET /v1/characters/{id}` shows it, its
/// memory layers, and every message of its conversation, oldest first.
async fn export(client: &Client, id: &str) -> anyhow::Result<Value> {
    let character = client.call(Method::GET, &format!("/v1/characters/{id}"), None).await?;
    let memories = client.call(Method::GET, &format!("/v1/characters/{id}/memories"), None).await?;
    let mut messages = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let cursor = before.as_deref().map(|b| format!("&before={b}")).unwrap_or_default();
        let page = client.call(Method::GET, &format!("/v1/characters/{id}/messages?limit=200{cursor}"), None).await?;
        messages.extend(page["items"].as_array().into_iter().flatten().cloned());
        match page["next_before"].as_str() {
            Some(next) => before = Some(next.to_owned()),
            None => break,
        }
    }
    messages.reverse();
    Ok(json!({"character": character["character"], "memories": memories, "messages": messages}))
}

async fn jobs(client: &Client, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List { status, kind, limit, json } => {
            let mut path = format!("/v1/jobs?limit={limit}");
            for (name, value) in [("status", status), ("kind", kind)] {
                if let Some(value) = value {
                    path.push_str(&format!("&{name}={value}"));
                }
            }
            let listed = client.call(Method::GET, &path, None).await?;
            print_or(json, &listed["items"], || {
                let rows: Vec<String> = listed["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|job| {
                        format!(
                            "{}  {:<20}  {:<10}  {}",
                            job["id"].as_str().unwrap_or_default(),
                            job["kind"].as_str().unwrap_or_default(),
                            job["status"].as_str().unwrap_or_default(),
                            job["created_at"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                if rows.is_empty() { "no jobs".to_owned() } else { rows.join("\n") }
            })
        }
        JobsCommand::Show { id, json } => {
            let shown = client.call(Method::GET, &format!("/v1/jobs/{id}"), None).await?;
            let job = &shown["job"];
            print_or(json, &shown, || {
                let mut text = format!(
                    "{}  {}  {}",
                    id,
                    job["kind"].as_str().unwrap_or_default(),
                    job["status"].as_str().unwrap_or_default()
                );
                if let Some(code) = job["error"]["code"].as_str() {
                    text.push_str(&format!("\n{code}: {}", job["error"]["message"].as_str().unwrap_or_default()));
                }
                text
            })
        }
        JobsCommand::Cancel { id } => {
            client.call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None).await?;
            eprintln!("cancelled {id}");
            Ok(())
        }
        JobsCommand::Retry { id } => {
            let retried = client.call(Method::POST, &format!("/v1/jobs/{id}/retry"), None).await?;
            let new_id = retried["job"]["id"].as_str().context("no job in the answer")?.to_owned();
            eprintln!("retrying as {new_id}");
            follow(client, &new_id, |_| {}).await
        }
    }
}
