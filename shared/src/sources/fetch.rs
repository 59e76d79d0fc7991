//! The one way FastNPC fetches a URL it was given: guarded against server-side request forgery
//! (SSRF) and bounded, because the `url` source kind fetches whatever a user types.
//!
//! - `http` and `https` only.
//! - The host is resolved first, and every address it resolves to must be public: not
//!   loopback, private, link-local, shared (carrier-grade NAT), multicast, unspecified,
//!   broadcast, documentation, benchmarking or reserved — IPv4 and IPv6, IPv4-mapped and NAT64
//!   and 6to4 forms included ([`refused_reason`]). An operator's allow-list
//!   ([`FetchPolicy::allowed`]: an internal wiki, the tests' fixture server) lifts the refusal
//!   for the networks it names, and nothing else.
//! - The connection goes to the very address that was checked (the client is told the name's
//!   address instead of looking it up again), so a second DNS answer cannot swap in another one
//!   (DNS rebinding); no proxy from the environment is used.
//! - Redirects are followed here, not by the HTTP client: at most [`FetchPolicy::max_redirects`],
//!   each hop checked like the first.
//! - The body is streamed and cut at [`FetchPolicy::max_bytes`] (never buffered whole first); the
//!   whole fetch, redirects included, ends at [`FetchPolicy::timeout`]; only `text/html`,
//!   `text/plain` and `application/json` are taken.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use futures::StreamExt;
use reqwest::{StatusCode, Url, header};

use crate::settings::IpNetworks;

/// How a fetch is guarded and bounded.
#[derive(Clone, Debug)]
pub struct FetchPolicy {
    /// Networks fetched from although [`refused_reason`] refuses them.
    pub allowed: IpNetworks,
    /// No address is refused: for the endpoints an operator configured (their Wikipedia mirror,
    /// their Baike origin), never for an address a user gave.
    pub any_address: bool,
    pub max_bytes: usize,
    pub timeout: Duration,
    pub max_redirects: usize,
    pub user_agent: String,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allowed: IpNetworks::default(),
            any_address: false,
            max_bytes: 5 * 1024 * 1024,
            timeout: Duration::from_secs(30),
            max_redirects: 5,
            user_agent: concat!("FastNPC/", env!("CARGO_PKG_VERSION"), " (+https://github.com/fastnpc)").to_owned(),
        }
    }
}

/// A fetched document.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// Where it was found, after redirects.
    pub url: Url,
    /// The media type, lower case, without parameters.
    pub media_type: String,
    /// The `charset` parameter of `Content-Type`, if any (decoding is the caller's).
    pub charset: Option<String>,
    pub body: Vec<u8>,
}

/// Why a fetch gave nothing. Each names the URL, so a job's error tells the user which source.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{url}` is not an http(s) URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("`{url}` is not fetched: it leads to a {reason} address ({address})")]
    Blocked { url: String, reason: &'static str, address: IpAddr },
    #[error("`{url}` was not found ({detail})")]
    NotFound { url: String, detail: String },
    #[error("`{url}` answered {status}")]
    Status { url: String, status: StatusCode, retry_after: Option<Duration> },
    #[error("`{url}` is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("`{url}` is {media_type}, not a web page or text")]
    UnsupportedType { url: String, media_type: String },
    #[error("`{url}` redirects more than {limit} times")]
    TooManyRedirects { url: String, limit: usize },
    #[error("`{url}` did not answer within {seconds} s")]
    TimedOut { url: String, seconds: u64 },
    #[error("`{url}` could not be reached: {detail}")]
    Unreachable { url: String, detail: String },
}

impl FetchError {
    /// The job error code it fails a generation with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } | Self::Blocked { .. } | Self::UnsupportedType { .. } | Self::TooLarge { .. } => {
                "source_blocked"
            }
            Self::NotFound { .. } => "source_not_found",
            Self::Status { .. } | Self::TooManyRedirects { .. } | Self::TimedOut { .. } | Self::Unreachable { .. } => {
                "source_unavailable"
            }
        }
    }

    /// Whether trying again later may succeed (`429`, `5xx`, timeouts, broken connections), and
    /// how long the server asked to wait.
    pub fn retry(&self) -> Option<Option<Duration>> {
        match self {
            Self::Status { status, retry_after, .. }
                if *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() =>
            {
                Some(*retry_after)
            }
            Self::TimedOut { .. } | Self::Unreachable { .. } => Some(None),
            _ => None,
        }
    }
}

/// Why an address may not be fetched from, or `None` for a public one.
pub fn refused_reason(address: IpAddr) -> Option<&'static str> {
    match address.to_canonical() {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(address: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = address.octets();
    Some(match () {
        _ if a == 0 => "unspecified",
        _ if address.is_loopback() => "loopback",
        _ if address.is_private() => "private",
        _ if address.is_link_local() => "link-local",
        _ if a == 100 && (64..128).contains(&b) => "shared (carrier-grade NAT)",
        _ if a == 192 && b == 0 && c == 0 => "protocol-assignment",
        _ if address.is_documentation() => "documentation",
        _ if a == 198 && (b == 18 || b == 19) => "benchmarking",
        _ if address.is_multicast() => "multicast",
        _ if address.is_broadcast() || a >= 240 => "reserved",
        _ => return None,
    })
}

fn refused_v6(address: Ipv6Addr) -> Option<&'static str> {
    let segments = address.segments();
    let embedded_v4 = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    Some(match segments {
        _ if address.is_unspecified() => "unspecified",
        _ if address.is_loopback() => "loopback",
        // ::a.b.c.d, the deprecated IPv4-compatible form.
        [0, 0, 0, 0, 0, 0, _, _] => "reserved (IPv4-compatible)",
        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return refused_v4(embedded_v4(high, low)),
        [0x2002, high, low, ..] => return refused_v4(embedded_v4(high, low)),
        [first, ..] if first & 0xfe00 == 0xfc00 => "private (unique local)",
        [first, ..] if first & 0xffc0 == 0xfe80 => "link-local",
        [first, ..] if first & 0xff00 == 0xff00 => "multicast",
        [0x2001, 0x0db8, ..] => "documentation",
        _ => return None,
    })
}

impl FetchPolicy {
    fn permits(&self, address: IpAddr) -> Result<(), &'static str> {
        match refused_reason(address) {
            Some(reason) if !self.any_address && !self.allowed.contains(address) => Err(reason),
            _ => Ok(()),
        }
    }
}

/// Fetches `url` under `policy` (see the module docs).
pub async fn fetch(policy: &FetchPolicy, url: &str) -> Result<Fetched, FetchError> {
    let seconds = policy.timeout.as_secs();
    match tokio::time::timeout(policy.timeout, fetch_unbounded(policy, url)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::TimedOut { url: url.to_owned(), seconds }),
    }
}

async fn fetch_unbounded(policy: &FetchPolicy, url: &str) -> Result<Fetched, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidUrl { url: url.to_owned(), reason: reason.to_owned() };
    let mut current = Url::parse(url).map_err(|error| invalid(&error.to_string()))?;
    for _ in 0..=policy.max_redirects {
        let response = request(policy, &current).await?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| FetchError::Status { url: current.to_string(), status, retry_after: None })?;
            current =
                current.join(location).map_err(|error| invalid(&format!("a redirect to `{location}`: {error}")))?;
            continue;
        }
        return read(policy, current, response).await;
    }
    Err(FetchError::TooManyRedirects { url: url.to_owned(), limit: policy.max_redirects })
}

/// One request to `url`, connected to an address the policy permits.
async fn request(policy: &FetchPolicy, url: &Url) -> Result<reqwest::Response, FetchError> {
    let name = url.to_string();
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::InvalidUrl { url: name, reason: format!("the scheme `{}`", url.scheme()) });
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let host = url.host().ok_or_else(|| FetchError::InvalidUrl { url: name.clone(), reason: "no host".into() })?;
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(&policy.user_agent);
    let addresses: Vec<SocketAddr> = match host {
        url::Host::Ipv4(v4) => vec![SocketAddr::new(v4.into(), port)],
        url::Host::Ipv6(v6) => vec![SocketAddr::new(v6.into(), port)],
        url::Host::Domain(domain) => {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((domain, port))
                .await
                .map_err(|error| FetchError::NotFound { url: name.clone(), detail: format!("{domain}: {error}") })?
                .collect();
            // Every address the name has must be allowed: which one a connection would take is
            // not ours to choose safely.
            if let Some(first) = found.first() {
                client = client.resolve(domain, *first);
            }
            found
        }
    };
    if addresses.is_empty() {
        return Err(FetchError::NotFound { url: name, detail: "the host has no address".into() });
    }
    for address in &addresses {
        policy.permits(address.ip()).map_err(|reason| FetchError::Blocked {
            url: name.clone(),
            reason,
            address: address.ip(),
        })?;
    }
    let client =
        client.build().map_err(|error| FetchError::Unreachable { url: name.clone(), detail: error.to_string() })?;
    client
        .get(url.clone())
        .send()
        .await
        .map_err(|error| FetchError::Unreachable { url: name, detail: error.without_url().to_string() })
}

/// The body of a final (non-redirect) answer, within the limits.
async fn read(policy: &FetchPolicy, url: Url, response: reqwest::Response) -> Result<Fetched, FetchError> {
    let name = url.to_string();
    let status = response.status();
    if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        return Err(FetchError::NotFound { url: name, detail: status.to_string() });
    }
    if !status.is_success() {
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(FetchError::Status { url: name, status, retry_after });
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let mut parameters = content_type.split(';').map(str::trim);
    let media_type = parameters.next().unwrap_or("").to_ascii_lowercase();
    let charset = parameters
        .filter_map(|parameter| parameter.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, value)| value.trim().trim_matches('"').to_owned());
    if !matches!(media_type.as_str(), "text/html" | "text/plain" | "application/json") {
        return Err(FetchError::UnsupportedType { url: name, media_type });
    }
    let too_large = || FetchError::TooLarge { url: url.to_string(), limit: policy.max_bytes };
    if response.content_length().is_some_and(|length| length > policy.max_bytes as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| FetchError::Unreachable { url: name.clone(), detail: error.to_string() })?;
        if body.len() + chunk.len() > policy.max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched { url, media_type, charset, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> Option<&'static str> {
        refused_reason(text.parse().unwrap())
    }

    #[test]
    fn every_non_public_range_is_refused_and_public_addresses_are_not() {
        let refused = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("192.0.0.8", "protocol-assignment"),
            ("192.0.2.1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "reserved (IPv4-compatible)"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("fc00::1", "private (unique local)"),
            ("fd12:3456::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
        ];
        for (address, expected) in refused {
            assert_eq!(reason(address), Some(expected), "{address}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "64:ff9b::808:808"] {
            assert_eq!(reason(public), None, "{public}");
        }
    }

    #[test]
    fn spellings_of_loopback_that_url_parsing_normalises_are_refused() {
        for spelling in [
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
        ] {
            let url = Url::parse(spelling).unwrap();
            let address: IpAddr = match url.host().unwrap() {
                url::Host::Ipv4(v4) => v4.into(),
                url::Host::Ipv6(v6) => v6.into(),
                url::Host::Domain(domain) => panic!("{spelling} parsed as the name {domain}"),
            };
            assert_eq!(refused_reason(address), Some("loopback"), "{spelling}");
        }
    }

    #[test]
    fn the_allow_list_lifts_a_refusal_for_its_networks_only() {
        let policy = FetchPolicy { allowed: "127.0.0.2/32".parse().unwrap(), ..FetchPolicy::default() };
        assert!(policy.permits("127.0.0.2".parse().unwrap()).is_ok());
        assert_eq!(policy.permits("127.0.0.3".parse().unwrap()), Err("loopback"));
        assert!(policy.permits("93.184.216.34".parse().unwrap()).is_ok());
    }
}
