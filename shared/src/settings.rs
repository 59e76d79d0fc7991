//! Typed settings, read once from environment variables at start-up.
//!
//! The variable names are part of the product's interface (operators, compose files and scripts
//! use them; ARCHITECTURE.md lists them). Every value has a default that works against the local
//! services, and a bad value fails start-up naming the variable, instead of surfacing later as a
//! confusing runtime error.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use crate::llm::{ModelRole, Purpose, StructuredOutput};

/// Where the default LLM endpoint points when nothing is configured.
pub const DEFAULT_LLM_BASE_URL: &str = "https://openrouter.ai/api/v1";
/// The original FastNPC's model.
pub const DEFAULT_LLM_MODEL: &str = "z-ai/glm-4-32b";

/// Everything both binaries need to know about their environment.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: Secret,
    pub amqp_url: Secret,
    pub redis_url: Secret,
    /// Prefix of queue, exchange and Redis key names, so deployments and tests share one broker.
    pub namespace: String,
    pub http_addr: SocketAddr,
    /// Where Prometheus metrics are served (`GET /metrics`, a listener of its own); none when
    /// unset (`FASTNPC_METRICS_ADDR`).
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the web app from this folder, read on every request, instead of the files compiled
    /// into the binary (`FASTNPC_WEB_DIR`; for front-end development).
    pub web_dir: Option<std::path::PathBuf>,
    /// The longest an ordinary API request may take before it is answered `503` and its handler
    /// dropped (SSE streams and `Prefer: wait` are excluded by design: they are bounded elsewhere).
    pub http_request_timeout: Duration,
    /// Peers whose `X-Forwarded-For` names the client (`FASTNPC_TRUSTED_PROXIES`); from anyone
    /// else the header is ignored and the peer is the client.
    pub trusted_proxies: IpNetworks,
    /// How many password hashes (argon2id, ~19 MiB each) run at once per API process, and how long
    /// a request waits for a turn before it is answered `503`.
    pub password_hashing: PasswordHashing,
    pub llm: LlmSettings,
    /// Where encyclopedia and web sources are fetched from, and how.
    pub sources: SourceSettings,
    /// Postgres connections per process, at most.
    pub db_pool_size: u32,
    /// Jobs in flight per worker process (also its RabbitMQ prefetch).
    pub worker_concurrency: u16,
    /// How long a claimed job stays owned without a heartbeat before another worker may take it.
    pub job_lease: Duration,
    /// The longest one attempt of a job may run before it is failed (`deadline_exceeded`).
    pub job_deadline: Duration,
    /// Lifetime of a login session.
    pub session_ttl: Duration,
    /// Abuse limits per user.
    pub limits: UserLimits,
    /// Pause between group-chat rounds, during which a user message interrupts the loop.
    pub group_turn_pause: Duration,
    /// When set, RabbitMQ deletes this namespace's queues after they go unused this long. For
    /// throwaway namespaces (tests, previews) only: an expired queue takes its messages with it.
    pub queue_expires: Option<Duration>,
    pub log_format: LogFormat,
    /// The one admin account, created or promoted by the API at start-up.
    pub admin: Option<AdminAccount>,
    /// Where the embedded mode (`fastnpc serve`) keeps its database.
    pub data_dir: PathBuf,
}

/// `FASTNPC_ADMIN_USERNAME` and `FASTNPC_ADMIN_PASSWORD`: who administers this deployment.
#[derive(Clone, Debug)]
pub struct AdminAccount {
    pub username: String,
    pub password: Secret,
}

/// The LLM endpoint and how hard to lean on it.
#[derive(Clone, Debug)]
pub struct LlmSettings {
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// The default model (`FASTNPC_LLM_MODEL`).
    pub model: String,
    /// Models for some purposes instead of the default (`FASTNPC_LLM_MODEL_PROFILE`, `_CHAT`,
    /// `_MEMORY`, `_MODERATOR`).
    pub role_models: RoleModels,
    /// Output budgets per purpose (`FASTNPC_LLM_MAX_TOKENS_*`): a small local model that rambles
    /// must not hold a single-slot server for minutes after the worker gave up on the call.
    pub max_tokens: OutputBudgets,
    /// How structured output is asked for (`FASTNPC_LLM_STRUCTURED_OUTPUT`): `auto` finds the
    /// strongest mode the server takes; a rung pins it.
    pub structured_output: StructuredOutput,
    /// Per-call budget: a call that produces nothing for this long is abandoned and retried.
    pub timeout: Duration,
    /// Retries of one call on 429, 5xx, timeouts and broken connections.
    pub max_retries: u32,
    /// LLM calls in flight per process, across all jobs.
    pub max_concurrency: usize,
    /// LLM requests per second per process (every attempt counts); `None` for no limit.
    pub rate_per_sec: Option<f64>,
    /// The endpoint is the LLM simulator (`FASTNPC_LLM_SIMULATED`, set by the start-up scripts
    /// that start one; the embedded mode sets it when it starts its own): the web app then says
    /// on every page that replies are placeholders.
    pub simulated: bool,
}

/// `FASTNPC_WIKIPEDIA_API_URL`, `FASTNPC_BAIKE_URL`, `FASTNPC_FETCH_*`, `FASTNPC_SOURCE_*`.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// The MediaWiki Action API, `{lang}` standing for the language edition.
    pub wikipedia_api_url: String,
    /// Baidu Baike's origin; lemma pages are `<origin>/item/<title>[/<id>]`.
    pub baike_url: String,
    /// Networks a user-given URL may lead to although they are not public (an internal wiki; the
    /// tests' fixture server). The encyclopedia endpoints above are the operator's own choice and
    /// are not checked against it.
    pub fetch_allowed: IpNetworks,
    /// Largest document fetched, in bytes.
    pub fetch_max_bytes: usize,
    /// The longest one fetch (redirects included) may take.
    pub fetch_timeout: Duration,
    /// Fetches of one document per job attempt when the source fails transiently (timeouts,
    /// `5xx`, `429`), with backoff between them.
    pub fetch_tries: u32,
    /// How long a fetched document is reused for another character of the same source.
    pub cache_ttl: Duration,
    /// How long search results (candidates) are reused.
    pub search_cache_ttl: Duration,
}

/// Per-role model overrides; `None` uses the default model.
#[derive(Clone, Debug, Default)]
pub struct RoleModels {
    pub profile: Option<String>,
    pub chat: Option<String>,
    pub memory: Option<String>,
    pub moderator: Option<String>,
}

/// `max_tokens` per purpose.
#[derive(Clone, Debug)]
pub struct OutputBudgets {
    /// One profile category's JSON (`FASTNPC_LLM_MAX_TOKENS_PROFILE`).
    pub profile_category: u32,
    /// The brief (`_BRIEF`).
    pub brief: u32,
    /// A chat or group reply (`_CHAT`).
    pub reply: u32,
    /// A memory compression step (`_MEMORY`).
    pub memory: u32,
    /// The moderator's choice (`_MODERATOR`).
    pub moderator: u32,
    /// The evaluation judge's scores (`_JUDGE`).
    pub judge: u32,
}

impl OutputBudgets {
    pub fn for_purpose(&self, purpose: Purpose) -> u32 {
        match purpose {
            Purpose::ProfileCategory => self.profile_category,
            Purpose::Brief => self.brief,
            Purpose::ChatReply | Purpose::GroupReply => self.reply,
            Purpose::MemoryShortTerm | Purpose::MemoryLongTerm => self.memory,
            Purpose::Moderator => self.moderator,
            Purpose::Judge => self.judge,
        }
    }
}

impl LlmSettings {
    /// The model that serves `role`.
    pub fn model_for(&self, role: ModelRole) -> &str {
        let chosen = match role {
            ModelRole::Profile => &self.role_models.profile,
            ModelRole::Chat => &self.role_models.chat,
            ModelRole::Memory => &self.role_models.memory,
            ModelRole::Moderator => &self.role_models.moderator,
        };
        chosen.as_deref().unwrap_or(&self.model)
    }

    /// True when the operator configured an endpoint or key; otherwise the start-up scripts run
    /// the simulator and say so.
    pub fn is_configured(&self) -> bool {
        self.api_key.is_some() || self.base_url != DEFAULT_LLM_BASE_URL
    }
}

/// `FASTNPC_PASSWORD_HASHING_CONCURRENCY` and `FASTNPC_PASSWORD_HASHING_QUEUE_MS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordHashing {
    /// Hashes and verifications running at once (default: the number of cores).
    pub concurrency: usize,
    /// The longest a request waits for one of those places; past it, `503` with `Retry-After`.
    pub queue_timeout: Duration,
}

/// A list of addresses and networks (`10.0.0.0/8`, `::1`): the reverse proxies whose
/// `X-Forwarded-For` is believed (`FASTNPC_TRUSTED_PROXIES`), the non-public networks a fetch may
/// reach (`FASTNPC_FETCH_ALLOW`). Empty, the default, matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpNetworks(Vec<IpNetwork>);

impl IpNetworks {
    /// Whether `address` lies in one of the networks.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(address))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn networks(&self) -> &[IpNetwork] {
        &self.0
    }
}

impl FromStr for IpNetworks {
    type Err = String;

    /// A comma- or space-separated list of addresses and CIDR networks.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split([',', ' ', '\t']).filter(|item| !item.is_empty()).map(str::parse).collect::<Result<_, _>>().map(Self)
    }
}

/// An IP network: an address and a prefix length (a lone address is a network of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNetwork {
    address: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Whether `address` lies in the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.address, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = text.split_once('/').map_or((text, None), |(a, p)| (a, Some(p)));
        let address: IpAddr = address.parse().map_err(|_| format!("`{text}` is not an IP address or CIDR network"))?;
        let address = address.to_canonical();
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {bits}"))?,
        };
        Ok(Self { address, prefix })
    }
}

/// What one user may use at most. Past a limit the API answers `429` with `Retry-After`.
#[derive(Clone, Debug)]
pub struct UserLimits {
    /// Job-creating requests per minute.
    pub submissions_per_minute: u32,
    /// Jobs queued or running at once.
    pub active_jobs: i64,
    pub characters: i64,
    pub groups: i64,
    /// LLM tokens (prompt and completion) per UTC day, checked before a job is created; 0 is no
    /// budget. A job already running finishes, so a day may end a little over it.
    pub daily_tokens: u64,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A value that must never reach a log line: `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call sites that need it are easy to grep for.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A variable was set to something unusable.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {variable}: {reason}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub reason: String,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads settings through `lookup`, so tests can build settings without touching the
    /// process environment (which is shared by every test thread).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str, default: &str| lookup(name).unwrap_or_else(|| default.to_owned());
        let api_key = lookup("FASTNPC_LLM_API_KEY").or_else(|| lookup("OPENROUTER_API_KEY")).map(Secret::new);
        let log_format = match get("FASTNPC_LOG_FORMAT", "pretty").as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(SettingsError {
                    variable: "FASTNPC_LOG_FORMAT",
                    reason: format!("expected `json` or `pretty`, got `{other}`"),
                });
            }
        };
        let namespace = get("FASTNPC_NAMESPACE", "fastnpc");
        if namespace.is_empty() || !namespace.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(SettingsError {
                variable: "FASTNPC_NAMESPACE",
                reason: "use ASCII letters, digits, `-` and `_` only".into(),
            });
        }
        let admin = match (lookup("FASTNPC_ADMIN_USERNAME"), lookup("FASTNPC_ADMIN_PASSWORD")) {
            (Some(username), Some(password)) => Some(AdminAccount { username, password: Secret::new(password) }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(SettingsError {
                    variable: "FASTNPC_ADMIN_PASSWORD",
                    reason: "required when FASTNPC_ADMIN_USERNAME is set".into(),
                });
            }
            (None, Some(_)) => {
                return Err(SettingsError {
                    variable: "FASTNPC_ADMIN_USERNAME",
                    reason: "required when FASTNPC_ADMIN_PASSWORD is set".into(),
                });
            }
        };
        Ok(Self {
            database_url: Secret::new(get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fastnpc")),
            amqp_url: Secret::new(get("FASTNPC_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")),
            redis_url: Secret::new(get("FASTNPC_REDIS_URL", "redis://127.0.0.1:6379")),
            namespace,
            http_addr: parse(&lookup, "FASTNPC_HTTP_ADDR", "127.0.0.1:8080")?,
            metrics_addr: lookup("FASTNPC_METRICS_ADDR")
                .map(|_| parse(&lookup, "FASTNPC_METRICS_ADDR", ""))
                .transpose()?,
            web_dir: lookup("FASTNPC_WEB_DIR").map(Into::into),
            http_request_timeout: Duration::from_secs(positive(&lookup, "FASTNPC_HTTP_REQUEST_TIMEOUT_SECS", "30")?),
            trusted_proxies: parse(&lookup, "FASTNPC_TRUSTED_PROXIES", "")?,
            password_hashing: PasswordHashing {
                concurrency: positive(
                    &lookup,
                    "FASTNPC_PASSWORD_HASHING_CONCURRENCY",
                    &std::thread::available_parallelism().map_or(2, |n| n.get()).to_string(),
                )? as usize,
                queue_timeout: Duration::from_millis(positive(&lookup, "FASTNPC_PASSWORD_HASHING_QUEUE_MS", "5000")?),
            },
            llm: LlmSettings {
                base_url: get("FASTNPC_LLM_BASE_URL", DEFAULT_LLM_BASE_URL).trim_end_matches('/').to_owned(),
                api_key,
                model: get("FASTNPC_LLM_MODEL", DEFAULT_LLM_MODEL),
                role_models: RoleModels {
                    profile: lookup("FASTNPC_LLM_MODEL_PROFILE"),
                    chat: lookup("FASTNPC_LLM_MODEL_CHAT"),
                    memory: lookup("FASTNPC_LLM_MODEL_MEMORY"),
                    moderator: lookup("FASTNPC_LLM_MODEL_MODERATOR"),
                },
                max_tokens: OutputBudgets {
                    profile_category: parse(&lookup, "FASTNPC_LLM_MAX_TOKENS_PROFILE", "1200")?,
                    brief: parse(&lookup, "FASTNPC_LLM_MAX_TOKENS_BRIEF", "400")?,
                    reply: parse(&lookup, "FASTNPC_LLM_MAX_TOKENS_CHAT", "800")?,
                    memory: parse(&lookup, "FASTNPC_LLM_MAX_TOKENS_MEMORY", "2000")?,
                    moderator: parse(&lookup, "FASTNPC_LLM_MAX_TOKENS_MODERATOR", "300")?,
                    judge: parse(&lookup, "FASTNPC_LLM_MAX_TOKENS_JUDGE", "1500")?,
                },
                structured_output: parse(&lookup, "FASTNPC_LLM_STRUCTURED_OUTPUT", "auto")?,
                timeout: Duration::from_secs(parse(&lookup, "FASTNPC_LLM_TIMEOUT_SECS", "120")?),
                max_retries: parse(&lookup, "FASTNPC_LLM_MAX_RETRIES", "4")?,
                max_concurrency: parse(&lookup, "FASTNPC_LLM_CONCURRENCY", "640")?,
                rate_per_sec: lookup("FASTNPC_LLM_RATE_PER_SEC")
                    .map(|_| parse(&lookup, "FASTNPC_LLM_RATE_PER_SEC", "0"))
                    .transpose()?,
                simulated: parse(&lookup, "FASTNPC_LLM_SIMULATED", "false")?,
            },
            sources: SourceSettings {
                wikipedia_api_url: get("FASTNPC_WIKIPEDIA_API_URL", "https://{lang}.wikipedia.org/w/api.php"),
                baike_url: get("FASTNPC_BAIKE_URL", "https://baike.baidu.com").trim_end_matches('/').to_owned(),
                fetch_allowed: parse(&lookup, "FASTNPC_FETCH_ALLOW", "")?,
                fetch_max_bytes: positive(&lookup, "FASTNPC_FETCH_MAX_BYTES", "5242880")? as usize,
                fetch_timeout: Duration::from_secs(positive(&lookup, "FASTNPC_FETCH_TIMEOUT_SECS", "30")?),
                fetch_tries: positive(&lookup, "FASTNPC_FETCH_TRIES", "4")? as u32,
                cache_ttl: Duration::from_secs(parse(&lookup, "FASTNPC_SOURCE_CACHE_SECS", "86400")?),
                search_cache_ttl: Duration::from_secs(parse(&lookup, "FASTNPC_SOURCE_SEARCH_CACHE_SECS", "600")?),
            },
            db_pool_size: parse(&lookup, "FASTNPC_DB_POOL_SIZE", "32")?,
            worker_concurrency: parse(&lookup, "FASTNPC_WORKER_CONCURRENCY", "512")?,
            job_lease: Duration::from_secs(parse(&lookup, "FASTNPC_JOB_LEASE_SECS", "30")?),
            job_deadline: Duration::from_secs(parse(&lookup, "FASTNPC_JOB_DEADLINE_SECS", "600")?),
            limits: UserLimits {
                submissions_per_minute: parse(&lookup, "FASTNPC_LIMIT_SUBMISSIONS_PER_MINUTE", "120")?,
                active_jobs: parse(&lookup, "FASTNPC_LIMIT_ACTIVE_JOBS", "50")?,
                characters: parse(&lookup, "FASTNPC_LIMIT_CHARACTERS", "500")?,
                groups: parse(&lookup, "FASTNPC_LIMIT_GROUPS", "100")?,
                daily_tokens: parse(&lookup, "FASTNPC_LIMIT_DAILY_TOKENS", "0")?,
            },
            session_ttl: Duration::from_secs(parse::<u64>(&lookup, "FASTNPC_SESSION_TTL_HOURS", "720")? * 3600),
            group_turn_pause: Duration::from_millis(parse(&lookup, "FASTNPC_GROUP_TURN_PAUSE_MS", "3000")?),
            queue_expires: lookup("FASTNPC_QUEUE_EXPIRES_SECS")
                .map(|_| parse(&lookup, "FASTNPC_QUEUE_EXPIRES_SECS", "0").map(Duration::from_secs))
                .transpose()?,
            log_format,
            admin,
            data_dir: PathBuf::from(get("FASTNPC_DATA_DIR", "./data")),
        })
    }
}

fn parse<T>(lookup: &impl Fn(&str) -> Option<String>, variable: &'static str, default: &str) -> Result<T, SettingsError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    let raw = lookup(variable).unwrap_or_else(|| default.to_owned());
    raw.parse().map_err(|error: T::Err| SettingsError { variable, reason: format!("`{raw}`: {error}") })
}

/// [`parse`] for a count that must not be zero.
fn positive(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: &str,
) -> Result<u64, SettingsError> {
    match parse(lookup, variable, default)? {
        0 => Err(SettingsError { variable, reason: "must be at least 1".into() }),
        value => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_local_services() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        assert_eq!(settings.namespace, "fastnpc");
        assert_eq!(settings.llm.model, DEFAULT_LLM_MODEL);
        assert!(!settings.llm.is_configured());
        assert_eq!(settings.worker_concurrency, 512);
    }

    #[test]
    fn openrouter_key_is_a_fallback_and_never_printed() {
        let settings =
            Settings::from_lookup(|name| (name == "OPENROUTER_API_KEY").then(|| "sk-or-secret".to_owned())).unwrap();
        assert!(settings.llm.is_configured());
        assert!(!format!("{settings:?}").contains("sk-or-secret"));
    }

    #[test]
    fn purposes_get_their_own_model_and_budget() {
        let settings = Settings::from_lookup(|name| match name {
            "FASTNPC_LLM_MODEL" => Some("big".to_owned()),
            "FASTNPC_LLM_MODEL_MODERATOR" => Some("small".to_owned()),
            "FASTNPC_LLM_MAX_TOKENS_CHAT" => Some("77".to_owned()),
            "FASTNPC_LLM_STRUCTURED_OUTPUT" => Some("prompt".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(settings.llm.model_for(Purpose::Moderator.role()), "small");
        assert_eq!(settings.llm.model_for(Purpose::ProfileCategory.role()), "big");
        assert_eq!(settings.llm.max_tokens.for_purpose(Purpose::GroupReply), 77);
        assert_eq!(settings.llm.structured_output, StructuredOutput::Prompt);
        let error = Settings::from_lookup(|name| (name == "FASTNPC_LLM_STRUCTURED_OUTPUT").then(|| "xml".to_owned()))
            .unwrap_err();
        assert_eq!(error.variable, "FASTNPC_LLM_STRUCTURED_OUTPUT");
    }

    #[test]
    fn the_daily_token_budget_is_off_unless_set() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        assert_eq!(settings.limits.daily_tokens, 0);
        let settings =
            Settings::from_lookup(|name| (name == "FASTNPC_LIMIT_DAILY_TOKENS").then(|| "200000".to_owned())).unwrap();
        assert_eq!(settings.limits.daily_tokens, 200_000);
        let error =
            Settings::from_lookup(|name| (name == "FASTNPC_LIMIT_DAILY_TOKENS").then(|| "-1".to_owned())).unwrap_err();
        assert_eq!(error.variable, "FASTNPC_LIMIT_DAILY_TOKENS");
    }

    #[test]
    fn the_request_timeout_is_30_seconds_unless_set_and_never_zero() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        assert_eq!(settings.http_request_timeout, Duration::from_secs(30));
        let settings =
            Settings::from_lookup(|name| (name == "FASTNPC_HTTP_REQUEST_TIMEOUT_SECS").then(|| "5".to_owned()))
                .unwrap();
        assert_eq!(settings.http_request_timeout, Duration::from_secs(5));
        for bad in ["0", "-1", "soon"] {
            let error =
                Settings::from_lookup(|name| (name == "FASTNPC_HTTP_REQUEST_TIMEOUT_SECS").then(|| bad.to_owned()))
                    .unwrap_err();
            assert_eq!(error.variable, "FASTNPC_HTTP_REQUEST_TIMEOUT_SECS", "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_and_networks() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        assert!(settings.trusted_proxies.is_empty(), "nobody is trusted unless configured");
        let settings = Settings::from_lookup(|name| {
            (name == "FASTNPC_TRUSTED_PROXIES").then(|| "10.1.0.0/16, 192.168.7.7 fd00::/8,::1".to_owned())
        })
        .unwrap();
        let proxies = settings.trusted_proxies;
        for trusted in ["10.1.0.1", "10.1.255.255", "192.168.7.7", "fd12::1", "::1", "::ffff:10.1.2.3"] {
            assert!(proxies.contains(trusted.parse().unwrap()), "{trusted}");
        }
        for untrusted in ["10.2.0.1", "192.168.7.8", "fe80::1", "::2", "127.0.0.1"] {
            assert!(!proxies.contains(untrusted.parse().unwrap()), "{untrusted}");
        }
        let everyone: IpNetworks = "0.0.0.0/0".parse().unwrap();
        assert!(everyone.contains("203.0.113.9".parse().unwrap()));
        assert!(!everyone.contains("2001:db8::1".parse().unwrap()), "an IPv4 network holds no IPv6 address");
        for bad in ["10.0.0.0/33", "localhost", "::1/129", "10.0.0.1/"] {
            let error =
                Settings::from_lookup(|name| (name == "FASTNPC_TRUSTED_PROXIES").then(|| bad.to_owned())).unwrap_err();
            assert_eq!(error.variable, "FASTNPC_TRUSTED_PROXIES", "{bad}");
        }
    }

    #[test]
    fn password_hashing_defaults_to_the_cores_and_a_short_queue() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert_eq!(
            settings.password_hashing,
            PasswordHashing { concurrency: cores, queue_timeout: Duration::from_secs(5) }
        );
        let error =
            Settings::from_lookup(|name| (name == "FASTNPC_PASSWORD_HASHING_CONCURRENCY").then(|| "0".to_owned()))
                .unwrap_err();
        assert_eq!(error.variable, "FASTNPC_PASSWORD_HASHING_CONCURRENCY");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = Settings::from_lookup(|name| (name == "FASTNPC_WORKER_CONCURRENCY").then(|| "many".to_owned()))
            .unwrap_err();
        assert_eq!(error.variable, "FASTNPC_WORKER_CONCURRENCY");
    }

    #[test]
    fn admin_needs_both_name_and_password_and_hides_the_password() {
        let error =
            Settings::from_lookup(|name| (name == "FASTNPC_ADMIN_USERNAME").then(|| "root".to_owned())).unwrap_err();
        assert_eq!(error.variable, "FASTNPC_ADMIN_PASSWORD");
        let settings = Settings::from_lookup(|name| match name {
            "FASTNPC_ADMIN_USERNAME" => Some("root".to_owned()),
            "FASTNPC_ADMIN_PASSWORD" => Some("hunter2-but-longer".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(settings.admin.as_ref().unwrap().username, "root");
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
