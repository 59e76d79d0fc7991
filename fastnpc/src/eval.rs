//! `fastnpc eval`: is a generated character any good?
//!
//! A fixed set of people (`tests/eval/sources/*.json`: name, language, source text, facts the
//! source states, a few chat questions) goes through the real product: an embedded FastNPC in a
//! throwaway data directory, driven over its HTTP API exactly as a user would, with whatever LLM
//! the environment configures (the built-in simulator when none is). Each character is then
//! checked two ways:
//!
//! - **Deterministically**: do the source's hard facts (names, dates, places) appear in the
//!   profile or brief; is any field empty; did every chat question get a reply.
//! - **By an LLM judge** (the `judge` purpose: `FASTNPC_LLM_MODEL_PROFILE` or the default
//!   model): per category, 0–10 for fidelity to the source, internal consistency and
//!   in-character speech in the chat, each with a reason.
//!
//! The report prints as a table and is written as JSON, so two prompt versions or two models can
//! be compared side by side (`fastnpc eval --compare A.json B.json`). The judge's scores are
//! noisy and the judge may share the generator's blind spots; the fact checks are not, which is
//! why both are there.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::Context as _;
use fastnpc_shared::{
    domain::CATEGORIES,
    llm::{self, ChatRequest, JsonSchema, LlmClient, Message, OpenAiClient, Purpose, reply},
    settings::{Secret, Settings},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// What `fastnpc eval` runs.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Folder of source documents.
    pub sources: PathBuf,
    /// Only these people (file stems or names); all when empty.
    pub only: Vec<String>,
    /// At most this many people, after `only`.
    pub limit: Option<usize>,
    /// Chat questions asked per character, at most.
    pub questions: usize,
    /// Longest wait for one job (a generation on a slow local model takes minutes).
    pub job_timeout: Duration,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            sources: PathBuf::from("tests/eval/sources"),
            only: Vec::new(),
            limit: None,
            questions: 2,
            job_timeout: Duration::from_secs(1800),
        }
    }
}

/// One person of the fixed set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSource {
    pub name: String,
    pub language: String,
    pub text: String,
    /// Strings the source states that a faithful profile repeats.
    pub facts: Vec<String>,
    pub questions: Vec<String>,
}

/// Everything one run found, as written to JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub judge_model: String,
    pub started_at: String,
    pub people: Vec<PersonReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PersonReport {
    pub name: String,
    pub language: String,
    /// `ready`, or why generation failed.
    pub outcome: String,
    pub generation_secs: f64,
    pub prompt_version: Option<String>,
    pub facts_found: Vec<String>,
    pub facts_missing: Vec<String>,
    /// `category.field` of every empty field.
    pub empty_fields: Vec<String>,
    pub chat: Vec<ChatTurn>,
    /// Per category key.
    pub scores: BTreeMap<String, Score>,
    /// Why the judge gave no scores, when it did not.
    pub judge_error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatTurn {
    pub question: String,
    pub reply: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub fidelity: u8,
    pub consistency: u8,
    pub in_character: u8,
    pub reason: String,
}

impl PersonReport {
    fn fact_share(&self) -> f64 {
        let total = self.facts_found.len() + self.facts_missing.len();
        if total == 0 { 0.0 } else { self.facts_found.len() as f64 / total as f64 }
    }

    /// Mean of each score over the categories: (fidelity, consistency, in-character).
    pub fn averages(&self) -> Option<(f64, f64, f64)> {
        if self.scores.is_empty() {
            return None;
        }
        let n = self.scores.len() as f64;
        let sum = |pick: fn(&Score) -> u8| self.scores.values().map(|s| f64::from(pick(s))).sum::<f64>() / n;
        Some((sum(|s| s.fidelity), sum(|s| s.consistency), sum(|s| s.in_character)))
    }
}

/// Reads the source documents, in file-name order, filtered by `options`.
pub fn load_sources(options: &EvalOptions) -> anyhow::Result<Vec<(String, EvalSource)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&options.sources)
        .with_context(|| format!("cannot read the eval sources in {}", options.sources.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut sources = Vec::new();
    for path in paths {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let source: EvalSource =
            serde_json::from_str(&text).with_context(|| format!("{} is not an eval source", path.display()))?;
        if options.only.is_empty() || options.only.iter().any(|o| *o == stem || *o == source.name) {
            sources.push((stem, source));
        }
    }
    if let Some(limit) = options.limit {
        sources.truncate(limit);
    }
    anyhow::ensure!(!sources.is_empty(), "no eval source matches in {}", options.sources.display());
    Ok(sources)
}

/// Runs the evaluation against an embedded FastNPC configured by `settings` (its data directory
/// and listen address are replaced by throwaway ones).
pub async fn run(mut settings: Settings, options: &EvalOptions) -> anyhow::Result<Report> {
    let sources = load_sources(options)?;
    let data_dir = std::env::temp_dir().join(format!("fastnpc-eval-{}", uuid::Uuid::now_v7().simple()));
    settings.data_dir = data_dir.clone();
    settings.http_addr = "127.0.0.1:0".parse().expect("a valid address");
    settings.limits.active_jobs = settings.limits.active_jobs.max(100);
    let system = crate::Embedded::build(settings.clone()).await?;
    let mut judge_settings = settings.llm.clone();
    if let Some(simulator) = system.simulator() {
        judge_settings.base_url = simulator.base_url();
        judge_settings.api_key = Some(Secret::new("simulator"));
    }
    let judge = OpenAiClient::new(&judge_settings);
    let simulated = system.simulator().is_some();
    let api = format!("http://{}", system.local_addr());
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { system.run_until(async move { stop.cancelled().await }).await }
    });

    let outcome = async {
        let client = ApiClient::sign_up(&api).await?;
        let mut people = Vec::new();
        for (stem, source) in &sources {
            tracing::info!(person = %stem, "evaluating");
            people.push(evaluate(&client, &judge, source, options).await?);
        }
        anyhow::Ok(people)
    }
    .await;
    stop.cancel();
    running.await.context("the embedded system stopped abnormally")??;
    let _ = tokio::fs::remove_dir_all(&data_dir).await;
    // With no LLM configured the simulator answered, whatever the model setting says.
    let name = |model: &str| if simulated { "llm-simulator".to_owned() } else { model.to_owned() };
    Ok(Report {
        model: name(settings.llm.model_for(Purpose::ProfileCategory.role())),
        judge_model: name(judge.model_for(Purpose::Judge)),
        started_at: chrono::Utc::now().to_rfc3339(),
        people: outcome?,
    })
}

async fn evaluate(
    client: &ApiClient,
    judge: &dyn LlmClient,
    source: &EvalSource,
    options: &EvalOptions,
) -> anyhow::Result<PersonReport> {
    let started = std::time::Instant::now();
    let created = client
        .post(
            "/v1/characters",
            &json!({"name": source.name, "source": {"kind": "text", "text": source.text}, "language": source.language}),
            None,
        )
        .await?;
    let character_id = created["character"]["id"].as_str().context("no character id")?.to_owned();
    let job = client.wait_for_job(created["job"]["id"].as_str().context("no job id")?, options.job_timeout).await?;
    let generation_secs = started.elapsed().as_secs_f64();
    let mut report = PersonReport {
        name: source.name.clone(),
        language: source.language.clone(),
        outcome: "ready".into(),
        generation_secs,
        prompt_version: None,
        facts_found: Vec::new(),
        facts_missing: source.facts.clone(),
        empty_fields: Vec::new(),
        chat: Vec::new(),
        scores: BTreeMap::new(),
        judge_error: None,
    };
    if job["status"] != "succeeded" {
        report.outcome = format!("generation {}: {}", job["status"], job["error"]["message"]);
        return Ok(report);
    }
    let character = client.get(&format!("/v1/characters/{character_id}")).await?["character"].clone();
    report.prompt_version = character["prompt_version"].as_str().map(str::to_owned);
    let profile = &character["profile"];
    let brief = character["brief"].as_str().unwrap_or_default();
    let written = format!("{profile}\n{brief}").to_lowercase();
    (report.facts_found, report.facts_missing) =
        source.facts.iter().cloned().partition(|fact| written.contains(&fact.to_lowercase()));
    for category in &CATEGORIES {
        for field in category.fields {
            if (category.key, field.key) == ("source", "source_url") {
                continue; // empty by design: a pasted text has no address
            }
            let value = &profile[category.key][field.key];
            let empty = match value {
                Value::String(s) => s.trim().is_empty(),
                Value::Array(items) => items.is_empty(),
                _ => true,
            };
            if empty {
                report.empty_fields.push(format!("{}.{}", category.key, field.key));
            }
        }
    }
    for question in source.questions.iter().take(options.questions) {
        let wait = options.job_timeout.as_secs().min(3600);
        let sent = client
            .post(&format!("/v1/characters/{character_id}/messages"), &json!({"content": question}), Some(wait))
            .await;
        let turn = match sent {
            Ok(body) if body["job"]["status"] == "succeeded" => ChatTurn {
                question: question.clone(),
                reply: body["reply"]["content"].as_str().map(str::to_owned),
                error: None,
            },
            Ok(body) => ChatTurn { question: question.clone(), reply: None, error: Some(body["job"].to_string()) },
            Err(error) => ChatTurn { question: question.clone(), reply: None, error: Some(error.to_string()) },
        };
        report.chat.push(turn);
    }
    match judge_character(judge, source, &character, &report.chat).await {
        Ok(scores) => report.scores = scores,
        Err(error) => report.judge_error = Some(error),
    }
    Ok(report)
}

const JUDGE_ATTEMPTS: u32 = 2;

const JUDGE_SYSTEM: &str = "You are a strict, fair evaluator of role-play character profiles written by another \
model from a source text. You only output JSON.";

/// Asks the judge for per-category scores.
async fn judge_character(
    judge: &dyn LlmClient,
    source: &EvalSource,
    character: &Value,
    chat: &[ChatTurn],
) -> Result<BTreeMap<String, Score>, String> {
    let transcript: String = chat
        .iter()
        .map(|turn| format!("User: {}\nCharacter: {}\n", turn.question, turn.reply.as_deref().unwrap_or("(no reply)")))
        .collect();
    let keys: Vec<&str> = CATEGORIES.iter().map(|c| c.key).collect();
    let prompt = format!(
        "Source text about {name}:\n{text}\n\nGenerated profile (JSON, one object per category):\n{profile}\n\n\
         Brief: {brief}\n\nA short chat with the character:\n{transcript}\n\
         For each category ({keys}), score from 0 to 10:\n\
         - fidelity: agrees with the source; nothing that contradicts it, no invented facts presented as certain;\n\
         - consistency: consistent within itself and with the other categories;\n\
         - in_character: the chat replies speak as this person, in a way that reflects this category.\n\
         Give a one-sentence reason per category. Output JSON: {{\"scores\": {{\"<category>\": \
         {{\"fidelity\": 0, \"consistency\": 0, \"in_character\": 0, \"reason\": \"...\"}}}}}}",
        name = source.name,
        text = source.text,
        profile = character["profile"],
        brief = character["brief"].as_str().unwrap_or_default(),
        keys = keys.join(", "),
    );
    let score = json!({
        "type": "object",
        "properties": {
            "fidelity": {"type": "integer", "minimum": 0, "maximum": 10},
            "consistency": {"type": "integer", "minimum": 0, "maximum": 10},
            "in_character": {"type": "integer", "minimum": 0, "maximum": 10},
            "reason": {"type": "string"},
        },
        "required": ["fidelity", "consistency", "in_character", "reason"],
        "additionalProperties": false,
    });
    let properties: serde_json::Map<String, Value> = keys.iter().map(|k| ((*k).to_owned(), score.clone())).collect();
    let schema = json!({
        "type": "object",
        "properties": {"scores": {"type": "object", "properties": properties, "required": keys, "additionalProperties": false}},
        "required": ["scores"],
        "additionalProperties": false,
    });
    let request = ChatRequest {
        messages: vec![Message::system(JUDGE_SYSTEM), Message::user(prompt)],
        json_schema: Some(JsonSchema { name: "fastnpc_eval_scores".into(), schema: schema.clone() }),
        purpose: Purpose::Judge,
        temperature: Some(0.0),
        ..Default::default()
    };
    #[derive(Deserialize)]
    struct Scores {
        scores: BTreeMap<String, Score>,
    }
    let scored = llm::ask_structured(judge, request, JUDGE_ATTEMPTS, |text| {
        let parsed = reply::parse::<Scores>(text, &schema)?;
        let missing: Vec<&&str> = keys.iter().filter(|k| !parsed.scores.contains_key(**k)).collect();
        if !missing.is_empty() {
            return Err(format!("no scores for {missing:?}"));
        }
        if parsed.scores.values().any(|s| s.fidelity > 10 || s.consistency > 10 || s.in_character > 10) {
            return Err("scores must be 0 to 10".into());
        }
        Ok(parsed.scores)
    })
    .await
    .map_err(|error| error.to_string())?;
    scored.map_err(|reason| format!("the judge gave no usable scores: {reason}"))
}

/// The table `fastnpc eval` prints.
pub fn table(report: &Report) -> String {
    let mut out = format!("model {} · judge {}\n", report.model, report.judge_model);
    out.push_str(&format!(
        "{:<16} {:<4} {:>8} {:>7} {:>6} {:>6} {:>6} {:>6}  {}\n",
        "person", "lang", "gen s", "facts", "empty", "fid", "cons", "char", "outcome"
    ));
    for person in &report.people {
        let (fidelity, consistency, in_character) =
            person.averages().map_or(("-".into(), "-".into(), "-".into()), |(f, c, i)| {
                (format!("{f:.1}"), format!("{c:.1}"), format!("{i:.1}"))
            });
        out.push_str(&format!(
            "{} {:<4} {:>8.1} {:>7} {:>6} {:>6} {:>6} {:>6}  {}\n",
            fit_columns(&person.name, 16),
            person.language,
            person.generation_secs,
            format!("{}/{}", person.facts_found.len(), person.facts_found.len() + person.facts_missing.len()),
            person.empty_fields.len(),
            fidelity,
            consistency,
            in_character,
            person.judge_error.as_deref().map_or(person.outcome.clone(), |e| format!("{} ({e})", person.outcome)),
        ));
    }
    out
}

/// Two reports side by side: per person, B's figures and the change from A.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut out = format!("A: {} (judge {})\nB: {} (judge {})\n", a.model, a.judge_model, b.model, b.judge_model);
    out.push_str(&format!(
        "{:<16} {:>14} {:>14} {:>14} {:>14}\n",
        "person", "facts A→B", "fid A→B", "cons A→B", "char A→B"
    ));
    let averages = |p: Option<&PersonReport>| p.and_then(PersonReport::averages);
    let cell = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => format!("{x:.1}→{y:.1} ({:+.1})", y - x),
        (x, y) => {
            format!("{}→{}", x.map_or("-".into(), |v| format!("{v:.1}")), y.map_or("-".into(), |v| format!("{v:.1}")))
        }
    };
    let mut names: Vec<&str> = a.people.iter().chain(&b.people).map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let (pa, pb) = (a.people.iter().find(|p| p.name == name), b.people.iter().find(|p| p.name == name));
        let (aa, ab) = (averages(pa), averages(pb));
        out.push_str(&format!(
            "{} {:>14} {:>14} {:>14} {:>14}\n",
            fit_columns(name, 16),
            cell(pa.map(PersonReport::fact_share), pb.map(PersonReport::fact_share)),
            cell(aa.map(|v| v.0), ab.map(|v| v.0)),
            cell(aa.map(|v| v.1), ab.map(|v| v.1)),
            cell(aa.map(|v| v.2), ab.map(|v| v.2)),
        ));
    }
    out
}

/// `text` cut and padded to `width` terminal columns (CJK characters take two).
fn fit_columns(text: &str, width: usize) -> String {
    let wide = |c: char| {
        matches!(c, '\u{1100}'..='\u{115f}' | '\u{2e80}'..='\u{a4cf}' | '\u{ac00}'..='\u{d7a3}'
            | '\u{f900}'..='\u{faff}' | '\u{fe30}'..='\u{fe4f}' | '\u{ff00}'..='\u{ff60}' | '\u{ffe0}'..='\u{ffe6}')
    };
    let columns = |c: char| if wide(c) { 2 } else { 1 };
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        if used + columns(c) > width {
            break;
        }
        used += columns(c);
        out.push(c);
    }
    out.push_str(&" ".repeat(width - used));
    out
}

/// A signed-up user's HTTP client for the embedded API.
struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    async fn sign_up(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let credentials =
            json!({"username": "evaluator", "password": format!("judge-{}", uuid::Uuid::now_v7().simple())});
        let registered = http.post(format!("{base}/v1/auth/register")).json(&credentials).send().await?;
        anyhow::ensure!(registered.status().is_success(), "register: {}", registered.text().await?);
        let login: Value = http.post(format!("{base}/v1/auth/login")).json(&credentials).send().await?.json().await?;
        let token = login["token"].as_str().context("login gave no token")?.to_owned();
        Ok(Self { http, base: base.to_owned(), token })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?;
        anyhow::ensure!(response.status().is_success(), "GET {path}: {}", response.text().await?);
        Ok(response.json().await?)
    }

    async fn post(&self, path: &str, body: &Value, wait_secs: Option<u64>) -> anyhow::Result<Value> {
        let mut request = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body);
        if let Some(wait) = wait_secs {
            request = request.header("Prefer", format!("wait={wait}"));
        }
        let response = request.send().await?;
        anyhow::ensure!(response.status().is_success(), "POST {path}: {}", response.text().await?);
        Ok(response.json().await?)
    }

    async fn wait_for_job(&self, job_id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let poll = async {
            loop {
                let job = self.get(&format!("/v1/jobs/{job_id}")).await?["job"].clone();
                if matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                    return anyhow::Ok(job);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        tokio::time::timeout(timeout, poll).await.context("the job did not finish in time")?
    }
}

/// Shared by the `fastnpc eval` subcommand and the `eval` binary: parses `args` (after the
/// command name), runs or compares, prints, writes.
pub async fn main(settings: Settings, args: &[String]) -> anyhow::Result<()> {
    let mut options = EvalOptions::default();
    let mut out = PathBuf::from("eval-report.json");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().cloned().with_context(|| format!("{arg} needs a value\n{EVAL_USAGE}"));
        match arg.as_str() {
            "--compare" => {
                let (a, b) = (value()?, value()?);
                let read = |path: &str| -> anyhow::Result<Report> {
                    Ok(serde_json::from_str(
                        &std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
                    )?)
                };
                print!("{}", compare(&read(&a)?, &read(&b)?));
                return Ok(());
            }
            "--sources" => options.sources = PathBuf::from(value()?),
            "--only" => options.only = value()?.split(',').map(str::to_owned).collect(),
            "--limit" => options.limit = Some(value()?.parse().context("--limit takes a number")?),
            "--questions" => options.questions = value()?.parse().context("--questions takes a number")?,
            "--job-timeout-secs" => {
                options.job_timeout =
                    Duration::from_secs(value()?.parse().context("--job-timeout-secs takes a number")?)
            }
            "--out" => out = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("{EVAL_USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown eval option {other}\n{EVAL_USAGE}"),
        }
    }
    let report = run(settings, &options).await?;
    print!("{}", table(&report));
    tokio::fs::write(&out, serde_json::to_vec_pretty(&report)?).await?;
    println!("report written to {}", out.display());
    Ok(())
}

pub const EVAL_USAGE: &str = "\
usage: fastnpc eval [--sources DIR] [--only A,B] [--limit N] [--questions N] [--job-timeout-secs S] [--out FILE]
       fastnpc eval --compare A.json B.json

  Generates a character for each source in DIR (default tests/eval/sources) with the configured
  LLM, chats with it, checks the source's facts, asks an LLM judge for 0-10 scores per category,
  prints a table and writes the report (default eval-report.json).";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fitted_to_terminal_columns() {
        assert_eq!(fit_columns("李白", 6), "李白  ");
        assert_eq!(fit_columns("诸葛亮先生", 5), "诸葛 ");
        assert_eq!(fit_columns("Abraham Lincoln", 8), "Abraham ");
        assert_eq!(fit_columns("Ada", 5), "Ada  ");
    }
}
