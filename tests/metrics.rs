//! The Prometheus endpoint (`[metrics] listen`) against two real shards: after single-shard,
//! cross-shard, refused and failing statements, `/metrics` shows counters grown by at least what
//! was run, the latency histograms, the pool and health gauges, and errors by SQLSTATE; and
//! Debian's `prometheus` scrapes it with no error and answers a query on a pgshard metric.
//!
//! The tests use their own table (`metrics_t`) and keys on the shared shard clusters.

mod support;

use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::time::{Duration, Instant};

use pgshard::metrics::{Kind, METRICS};
use support::{
    connect_direct, shard_clusters, shard_of_id, start_proxy, two_shard_config_with, Proxy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

/// Bounds every wait, so that a hang fails the test instead of stalling the suite. Not a
/// performance bar.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A port free now on 127.0.0.1, below the kernel's ephemeral range (32768 and up), so no
/// outgoing connection takes it before the server that is given it binds it.
fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 5_000) as u16 * 2 + NEXT.fetch_add(100, Relaxed);
    (start..32_000)
        .find(|&port| StdListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below 32768")
}

/// A proxy over both shard clusters with `metrics_t` sharded and metrics on `port`.
async fn proxy_with_metrics(port: u16) -> Proxy {
    static CREATED: OnceCell<()> = OnceCell::const_new();
    let clusters = tokio::task::spawn_blocking(shard_clusters)
        .await
        .expect("starting the shard clusters");
    CREATED
        .get_or_init(|| async {
            for cluster in clusters {
                let direct = connect_direct(cluster.primary_port()).await;
                direct
                    .batch_execute(
                        "CREATE TABLE IF NOT EXISTS metrics_t (user_id bigint PRIMARY KEY, v int)",
                    )
                    .await
                    .expect("creating metrics_t");
                tokio::task::spawn_blocking(move || cluster.wait_for_replay(HANG_GUARD))
                    .await
                    .expect("replay wait task")
                    .expect("the replica has metrics_t");
            }
        })
        .await;
    let mut config = two_shard_config_with(clusters, &["metrics_t"]);
    config.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    start_proxy(&config).await
}

/// GETs `path` from 127.0.0.1:`port` (HTTP/1.0: the answer ends when the server closes):
/// the status line and the body.
async fn http_get(port: u16, path: &str) -> (String, String) {
    let work = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(HANG_GUARD, work)
        .await
        .expect("an HTTP answer within the hang guard")
        .unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"));
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP head");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

async fn scrape(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics").await;
    assert!(status.contains(" 200 "), "GET /metrics answered {status}");
    body
}

/// The value of the sample `series` (name and labels as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_statements_routes_errors_and_latency() {
    let port = free_port();
    let proxy = proxy_with_metrics(port).await;
    let client = tokio::time::timeout(HANG_GUARD, proxy.connect())
        .await
        .expect("login within the hang guard");
    let before = scrape(port).await;

    const SINGLE: i64 = 20;
    for id in 0..SINGLE {
        client
            .execute(
                "INSERT INTO metrics_t VALUES ($1, 1) ON CONFLICT (user_id) DO UPDATE SET v = 1",
                &[&(7_000_000 + id)],
            )
            .await
            .expect("single-shard insert");
    }
    client
        .simple_query("SELECT count(*) FROM metrics_t")
        .await
        .expect("a scatter-gather count");
    let on = |shard: usize| {
        (7_100_000_i64..)
            .find(|&id| shard_of_id(id) == shard)
            .expect("a key of each shard")
    };
    client
        .simple_query(&format!(
            "INSERT INTO metrics_t VALUES ({}, 1), ({}, 1) ON CONFLICT (user_id) DO NOTHING",
            on(0),
            on(1)
        ))
        .await
        .expect("an insert split over both shards");
    let missing = client
        .simple_query("SELECT * FROM metrics_no_such_table")
        .await;
    assert!(missing.is_err(), "a query of a missing table fails");
    let refused = client.execute("SET pgshard.shard = 's0'", &[]).await;
    let refused = refused.expect_err("SET pgshard.* over the extended protocol is refused");
    assert_eq!(refused.code().map(|c| c.code()), Some("0A000"));

    let after = scrape(port).await;
    let grew = |series: &str| value(&after, series) - value(&before, series);
    let route = |name: &str, kind: &str| grew(&format!("{name}{{route=\"{kind}\"}}"));
    assert!(
        route("pgshard_statements_total", "single_shard") >= SINGLE as f64,
        "{after}"
    );
    assert!(
        route("pgshard_transactions_total", "single_shard") >= SINGLE as f64,
        "{after}"
    );
    assert!(
        route("pgshard_statements_total", "scatter_gather") >= 1.0,
        "{after}"
    );
    assert!(
        route("pgshard_transactions_total", "scatter_gather") >= 1.0,
        "{after}"
    );
    assert!(
        route("pgshard_statements_total", "fan_out") >= 1.0,
        "{after}"
    );
    assert!(
        route("pgshard_statements_total", "refused") >= 1.0,
        "{after}"
    );
    assert!(
        grew("pgshard_errors_total{sqlstate=\"42P01\"}") >= 1.0,
        "{after}"
    );
    assert!(
        grew("pgshard_errors_total{sqlstate=\"0A000\"}") >= 1.0,
        "{after}"
    );
    // Both shards got some of the inserts: each has latency and checkout samples.
    for shard in ["s0", "s1"] {
        let count = format!("pgshard_query_duration_seconds_count{{shard=\"{shard}\"}}");
        assert!(value(&after, &count) >= 1.0, "{count} in {after}");
        let bucket =
            format!("pgshard_query_duration_seconds_bucket{{shard=\"{shard}\",le=\"+Inf\"}}");
        assert_eq!(sample(&after, &bucket), sample(&after, &count), "{after}");
        let waits = format!("pgshard_checkout_wait_seconds_count{{shard=\"{shard}\"}}");
        assert!(value(&after, &waits) >= 1.0, "{waits} in {after}");
    }
    assert!(value(&after, "pgshard_clients_connected") >= 1.0, "{after}");
    assert!(
        after.contains("# TYPE pgshard_statements_total counter"),
        "{after}"
    );
    assert!(
        after.contains("# TYPE pgshard_query_duration_seconds histogram"),
        "{after}"
    );
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("pgshard_server_up{") && l.ends_with(" 1")),
        "{after}"
    );
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("pgshard_server_connections{") && l.contains("state=\"idle\"")),
        "{after}"
    );

    // An explicit transaction: one transaction, its BEGIN answered by pgshard (held back until
    // the first statement picks the shard), three statements on the shard.
    for sql in ["BEGIN", "SELECT 1", "SELECT 2", "COMMIT"] {
        client
            .simple_query(sql)
            .await
            .expect("the explicit transaction");
    }
    let last = scrape(port).await;
    let grew = |series: String| value(&last, &series) - value(&after, &series);
    let route = |name: &str, kind: &str| grew(format!("{name}{{route=\"{kind}\"}}"));
    assert_eq!(
        route("pgshard_transactions_total", "single_shard"),
        1.0,
        "{last}"
    );
    assert_eq!(
        route("pgshard_statements_total", "single_shard"),
        3.0,
        "{last}"
    );
    assert_eq!(route("pgshard_statements_total", "local"), 1.0, "{last}");

    let (status, _) = http_get(port, "/other").await;
    assert!(status.contains(" 404 "), "GET /other answered {status}");
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_metric_is_exported() {
    let port = free_port();
    let proxy = proxy_with_metrics(port).await;
    let client = proxy.connect().await;
    client
        .simple_query("SELECT * FROM metrics_t WHERE user_id = 1")
        .await
        .expect("a single-shard read");
    let _ = client
        .simple_query("SELECT * FROM metrics_no_such_table")
        .await;
    // The replica lag comes from WAL samples a scrape asks for: a later scrape has them.
    let deadline = Instant::now() + HANG_GUARD;
    let missing = loop {
        let text = scrape(port).await;
        let missing: Vec<&str> = METRICS
            .iter()
            .filter(|m| {
                let kind = match m.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Histogram => "histogram",
                };
                !text.contains(&format!("# TYPE {} {kind}", m.name))
            })
            .map(|m| m.name)
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(missing.is_empty(), "not exported: {missing:?}");
    // The stats core's counts: bytes from this client, it is logged in (idle now), and its
    // keyed read's slot is among the busiest.
    let text = scrape(port).await;
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
    };
    assert!(value("pgshard_client_bytes_total{direction=\"received\"}") > 0.0);
    assert!(value("pgshard_client_bytes_total{direction=\"sent\"}") > 0.0);
    assert!(value("pgshard_clients{state=\"idle\"}") >= 1.0);
    assert!(value("pgshard_hot_slot_statements{") >= 1.0);
    drop(client);
    proxy.shutdown().await;
}

/// A `prometheus` server scraping one target every second, with its own storage, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let binary = Path::new("/usr/bin/prometheus");
        assert!(
            binary.exists(),
            "Debian's prometheus is not installed: apt-get install prometheus (.ci/run does)"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - \
                 job_name: pgshard\n    static_configs:\n      - targets: \
                 ['127.0.0.1:{target_port}']\n"
            ),
        )
        .expect("writing prometheus.yml");
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// GETs an API path and parses its JSON (`None` while prometheus is not answering yet).
    async fn api(&self, path: &str) -> Option<serde_json::Value> {
        TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        let (status, body) = http_get(self.port, path).await;
        if !status.contains(" 200 ") {
            return None;
        }
        serde_json::from_str(&body).ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debians_prometheus_scrapes_pgshard() {
    let port = free_port();
    let proxy = proxy_with_metrics(port).await;
    let client = proxy.connect().await;
    for id in 0..5_i64 {
        client
            .query(
                "SELECT * FROM metrics_t WHERE user_id = $1",
                &[&(8_000_000 + id)],
            )
            .await
            .expect("a single-shard read");
    }
    let prometheus = Prometheus::start(port);
    let deadline = Instant::now() + HANG_GUARD;

    // The target is up, and its last scrape had no error.
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(targets) = prometheus.api("/api/v1/targets").await {
            let active = targets["data"]["activeTargets"].as_array().cloned();
            let target = active.and_then(|a| a.into_iter().next());
            if let Some(target) = target {
                if target["health"] == "up" {
                    assert_eq!(target["lastError"], "", "{target}");
                    assert_eq!(
                        target["scrapeUrl"],
                        format!("http://127.0.0.1:{port}/metrics")
                    );
                    last = Some(target);
                    break;
                }
                last = Some(target);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let target = last.expect("prometheus lists the pgshard target");
    assert_eq!(target["health"], "up", "{target}");

    // A query on a pgshard counter answers with what pgshard counted.
    let query = "/api/v1/query?query=pgshard_statements_total%7Broute%3D%22single_shard%22%7D";
    let mut counted = None;
    while Instant::now() < deadline && counted.is_none() {
        if let Some(answer) = prometheus.api(query).await {
            counted = answer["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok());
        }
        if counted.is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let counted = counted.expect("prometheus has pgshard_statements_total");
    assert!(
        counted >= 5.0,
        "prometheus saw {counted} single-shard statements"
    );
    drop(client);
    proxy.shutdown().await;
}
