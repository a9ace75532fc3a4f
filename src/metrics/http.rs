//! The `/metrics` endpoint: a tiny HTTP/1 responder on `[metrics] listen` that answers
//! `GET /metrics` with the Prometheus text and anything else with 404, one request per
//! connection. Never reads more than a request head and never touches a client session.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::shared::Shared;

/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a scraper has to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often recorded histogram samples are drained into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr} (metrics.listen): {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Binds `[metrics] listen`, if configured.
pub async fn bind(shared: &Shared) -> Result<Option<TcpListener>, MetricsError> {
    let Some(metrics) = shared.config.metrics.as_ref() else {
        return Ok(None);
    };
    TcpListener::bind(&metrics.listen)
        .await
        .map(Some)
        .map_err(|source| MetricsError::Bind {
            addr: metrics.listen.clone(),
            source,
        })
}

/// Serves `/metrics` on `listener` until the task is dropped, and keeps the histograms drained.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = upkeep.tick() => shared.metrics.upkeep(),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // The generation a reload made last, if any: its pools and servers.
                    let shared = shared.newest().unwrap_or_else(|| shared.clone());
                    tokio::spawn(async move {
                        let answer = tokio::time::timeout(IO_TIMEOUT, respond(stream, &shared));
                        if let Ok(Err(e)) = answer.await {
                            tracing::debug!("metrics request failed: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn respond(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return write(&mut stream, "431 Request Header Fields Too Large", "", "").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next(), words.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    if method == Some(b"GET") && path == Some(b"/metrics") {
        let body = super::scrape::render(&shared.metrics, shared);
        let kind = "text/plain; version=0.0.4; charset=utf-8";
        write(&mut stream, "200 OK", kind, &body).await
    } else {
        let body = "only GET /metrics is served here\n";
        write(&mut stream, "404 Not Found", "text/plain", body).await
    }
}

async fn write(
    stream: &mut TcpStream,
    status: &str,
    kind: &str,
    body: &str,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !kind.is_empty() {
        out.push_str(&format!("Content-Type: {kind}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}
