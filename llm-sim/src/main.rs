//! `llm-sim`: the LLM simulator as a standalone OpenAI-compatible server, for demos, local
//! runs of the stack and benchmarks against a provider with known latency.
//!
//! ```text
//! llm-sim [--addr 127.0.0.1:8089] [--ttft-ms N] [--inter-token-ms N] [--reply-tokens N]
//!         [--tokens-per-chunk N] [--seed N]
//! ```
//!
//! `FASTNPC_SIM_ADDR` sets the default address. Faults, rules and configuration can be changed
//! while it runs through the `/sim` control API (see the crate's library).

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use fastnpc_llm_sim::{LlmSimulator, SimConfig};
use tracing_subscriber::EnvFilter;

const DEFAULT_ADDR: &str = "127.0.0.1:8089";

const USAGE: &str = "\
usage: llm-sim [--addr ADDR] [--ttft-ms N] [--inter-token-ms N] [--reply-tokens N]
               [--tokens-per-chunk N] [--seed N]

  --addr              listen address (default: $FASTNPC_SIM_ADDR, else 127.0.0.1:8089)
  --ttft-ms           time to first token in ms (default 50)
  --inter-token-ms    delay per token in ms (default 5)
  --reply-tokens      tokens per free-text reply (default 24)
  --tokens-per-chunk  tokens per streamed chunk (default 1)
  --seed              content seed (default 0)";

struct Args {
    addr: SocketAddr,
    config: SimConfig,
}

/// Parses `--flag value` and `--flag=value`. `Ok(None)` means help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let default_addr = std::env::var("FASTNPC_SIM_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.into());
    let mut addr =
        default_addr.parse().with_context(|| format!("FASTNPC_SIM_ADDR is not a socket address: {default_addr}"))?;
    let mut config = SimConfig::default();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let value = match inline {
            Some(value) => value,
            None => args.next().with_context(|| format!("{flag} needs a value"))?,
        };
        let number =
            || value.parse::<u64>().with_context(|| format!("{flag} needs a non-negative integer, got {value:?}"));
        match flag.as_str() {
            "--addr" => {
                addr = value.parse().with_context(|| format!("--addr needs a socket address, got {value:?}"))?;
            }
            "--ttft-ms" => config.time_to_first_token = Duration::from_millis(number()?),
            "--inter-token-ms" => config.inter_token_delay = Duration::from_millis(number()?),
            "--reply-tokens" => config.reply_tokens = usize::try_from(number()?)?,
            "--tokens-per-chunk" => config.tokens_per_chunk = usize::try_from(number()?)?,
            "--seed" => config.seed = number()?,
            _ => bail!("unknown argument {flag}\n\n{USAGE}"),
        }
    }
    Ok(Some(Args { addr, config }))
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();

    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    tracing::info!(config = ?args.config, "starting LLM simulator");
    let simulator = LlmSimulator::start_on(args.addr, args.config).await?;
    // Scripts wait for this exact line before pointing clients at the simulator.
    println!("llm-sim listening on {}", simulator.base_url());
    std::io::stdout().flush()?;

    shutdown_signal().await?;
    tracing::info!(stats = ?simulator.stats(), "shutting down");
    simulator.shutdown().await;
    Ok(())
}
