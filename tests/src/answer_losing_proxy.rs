//! A TCP proxy that loses one answer: the first time a client sends a chunk holding every
//! trigger pattern, the proxy passes it on, waits until the server has run it, then cuts the
//! connection without passing the answer back. The client sees what a response timeout leaves
//! it with: a command that may or may not have happened.
//!
//! Built for Redis (it proves the command ran by sending a `PING` behind it and waiting for the
//! `PONG`, which Redis answers in order), between the system under test and the real server.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const PONG: &[u8] = b"+PONG\r\n";

pub struct AnswerLosingProxy {
    address: SocketAddr,
    losses: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl AnswerLosingProxy {
    /// Listens on a free loopback port and forwards to `upstream`; loses the answer to the first
    /// chunk that contains every one of `triggers`.
    pub async fn start(upstream: SocketAddr, triggers: Vec<Vec<u8>>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let losses = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared { triggers, armed: AtomicBool::new(true), losses: losses.clone() });
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, &shared).await;
                    }
                });
            }
        });
        Ok(Self { address, losses, accept })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// How many answers were lost (0 or 1).
    pub fn losses(&self) -> usize {
        self.losses.load(Ordering::SeqCst)
    }
}

impl Drop for AnswerLosingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct Shared {
    triggers: Vec<Vec<u8>>,
    armed: AtomicBool,
    losses: Arc<AtomicUsize>,
}

impl Shared {
    /// True once: for the first chunk holding every trigger.
    fn fires_on(&self, chunk: &[u8]) -> bool {
        self.triggers.iter().all(|trigger| contains(chunk, trigger)) && self.armed.swap(false, Ordering::SeqCst)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Both directions in one task, so that after a trigger nothing of the server's reaches the
/// client.
async fn relay(mut client: TcpStream, mut server: TcpStream, shared: &Shared) {
    let (mut from_client, mut from_server) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => {
                let Ok(n @ 1..) = read else { return };
                let chunk = &from_client[..n];
                if shared.fires_on(chunk) {
                    if lose_answer(&mut server, chunk).await.is_ok() {
                        shared.losses.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
                if server.write_all(chunk).await.is_err() {
                    return;
                }
            }
            read = server.read(&mut from_server) => {
                let Ok(n @ 1..) = read else { return };
                if client.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends `chunk` and a `PING` behind it, and reads (and drops) everything up to the `PONG`: the
/// server has then run the chunk's commands.
async fn lose_answer(server: &mut TcpStream, chunk: &[u8]) -> std::io::Result<()> {
    server.write_all(chunk).await?;
    server.write_all(PING).await?;
    let mut answers = Vec::new();
    let mut buffer = [0u8; 4096];
    while !contains(&answers, PONG) {
        let n = server.read(&mut buffer).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        answers.extend_from_slice(&buffer[..n]);
    }
    Ok(())
}
