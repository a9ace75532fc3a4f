//! Prometheus metrics: one recorder per proxy, held by [`crate::shared::Shared`] (never installed
//! as the process-global recorder), with counters and histograms registered once and kept as
//! handles, so the hot path only bumps atomics; gauges of current state are set from `Shared` at
//! scrape time. Must never block a session, allocate on the hot path or keep global state.

mod http;
mod scrape;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use metrics_util::MetricKindMask;

use crate::config::Config;

pub use http::{bind, serve, MetricsError};

/// The metric kinds of the Prometheus text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric: name, kind, labels and meaning (the README lists the same).
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

pub const CLIENTS: &str = "pgshard_clients_connected";
pub const CLIENTS_PINNED: &str = "pgshard_clients_pinned";
pub const SERVER_CONNECTIONS: &str = "pgshard_server_connections";
pub const POOL_SIZE: &str = "pgshard_pool_size";
pub const SERVER_UP: &str = "pgshard_server_up";
pub const REPLICA_LAG: &str = "pgshard_replica_lag_bytes";
pub const CHECKOUT_WAIT: &str = "pgshard_checkout_wait_seconds";
pub const QUERY_DURATION: &str = "pgshard_query_duration_seconds";
pub const STATEMENTS: &str = "pgshard_statements_total";
pub const TRANSACTIONS: &str = "pgshard_transactions_total";
pub const ERRORS: &str = "pgshard_errors_total";
pub const RELOADS: &str = "pgshard_reloads_total";
pub const CLIENTS_BY_STATE: &str = "pgshard_clients";
pub const CLIENT_BYTES: &str = "pgshard_client_bytes_total";
pub const HOT_SLOT_STATEMENTS: &str = "pgshard_hot_slot_statements";
pub const HOT_SLOT_BYTES: &str = "pgshard_hot_slot_bytes";

/// How many of the busiest slots the hot-slot gauges show.
const HOT_SLOTS: usize = 10;

/// Every metric pgshard exports. The exporter describes exactly these; the docker dashboard
/// test checks its queries against them.
pub const METRICS: &[MetricInfo] = &[
    MetricInfo {
        name: CLIENTS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Client connections open now (logging in or logged in).",
    },
    MetricInfo {
        name: CLIENTS_PINNED,
        kind: Kind::Gauge,
        labels: &[],
        help: "Transaction-mode clients holding their server connection for session state.",
    },
    MetricInfo {
        name: SERVER_CONNECTIONS,
        kind: Kind::Gauge,
        labels: &["shard", "server", "role", "user", "state"],
        help: "Server connections per pool: active (checked out, opening or resetting) or idle.",
    },
    MetricInfo {
        name: POOL_SIZE,
        kind: Kind::Gauge,
        labels: &["shard", "server", "role", "user"],
        help: "Most server connections a pool may open.",
    },
    MetricInfo {
        name: SERVER_UP,
        kind: Kind::Gauge,
        labels: &["shard", "server", "role"],
        help: "1 when the server passed its last health check, else 0.",
    },
    MetricInfo {
        name: REPLICA_LAG,
        kind: Kind::Gauge,
        labels: &["shard", "server"],
        help: "WAL bytes the replica had yet to replay at the last sample (read_your_writes).",
    },
    MetricInfo {
        name: CHECKOUT_WAIT,
        kind: Kind::Histogram,
        labels: &["shard"],
        help: "Time a client waited for a server connection from a pool (opening included).",
    },
    MetricInfo {
        name: QUERY_DURATION,
        kind: Kind::Histogram,
        labels: &["shard"],
        help: "Time from a request sent to a shard's server until its ReadyForQuery.",
    },
    MetricInfo {
        name: STATEMENTS,
        kind: Kind::Counter,
        labels: &["route"],
        help: "Statements (Query and Bind messages) by how pgshard carried them out.",
    },
    MetricInfo {
        name: TRANSACTIONS,
        kind: Kind::Counter,
        labels: &["route"],
        help: "Transactions ended (explicit, or one statement outside a transaction) by route.",
    },
    MetricInfo {
        name: ERRORS,
        kind: Kind::Counter,
        labels: &["sqlstate"],
        help: "ErrorResponses sent to clients (pgshard's and the servers'), by SQLSTATE.",
    },
    MetricInfo {
        name: RELOADS,
        kind: Kind::Counter,
        labels: &["result"],
        help: "Configuration reloads, by result (ok or failed).",
    },
    MetricInfo {
        name: CLIENTS_BY_STATE,
        kind: Kind::Gauge,
        labels: &["state"],
        help: "Logged-in clients: idle (no server connection), waiting for one, or active.",
    },
    MetricInfo {
        name: CLIENT_BYTES,
        kind: Kind::Counter,
        labels: &["direction"],
        help: "Bytes received from and sent to clients (the pools' SHOW STATS totals).",
    },
    MetricInfo {
        name: HOT_SLOT_STATEMENTS,
        kind: Kind::Gauge,
        labels: &["slot", "shard"],
        help: "Statements of the 10 busiest slots over the last minute.",
    },
    MetricInfo {
        name: HOT_SLOT_BYTES,
        kind: Kind::Gauge,
        labels: &["slot", "shard"],
        help: "Bytes of the 10 busiest slots (by statements) over the last minute.",
    },
];

/// How a statement was carried out (the `route` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// On one shard's server connection.
    SingleShard,
    /// A read on several shards, merged by pgshard.
    ScatterGather,
    /// A write on several shards' primaries (COPY split by key included).
    FanOut,
    /// Refused by pgshard before anything was sent.
    Refused,
    /// Answered by pgshard itself (a held-back BEGIN, `SET pgshard.*`).
    Local,
}

impl RouteKind {
    pub const ALL: [RouteKind; 5] = [
        RouteKind::SingleShard,
        RouteKind::ScatterGather,
        RouteKind::FanOut,
        RouteKind::Refused,
        RouteKind::Local,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RouteKind::SingleShard => "single_shard",
            RouteKind::ScatterGather => "scatter_gather",
            RouteKind::FanOut => "fan_out",
            RouteKind::Refused => "refused",
            RouteKind::Local => "local",
        }
    }
}

/// Bucket bounds (seconds) of the checkout wait histogram.
const CHECKOUT_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];
/// Bucket bounds (seconds) of the query duration histogram.
const QUERY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Distinct SQLSTATEs counted; later new ones count under `other`.
const MAX_SQLSTATES: usize = 512;

static METADATA: Metadata<'static> = Metadata::new("pgshard", Level::INFO, Some("pgshard"));

/// Per-shard histogram handles.
struct ShardMetrics {
    checkout_wait: Histogram,
    query: Histogram,
}

/// The proxy's metrics: the recorder and the handles the sessions bump. Disabled (every
/// method a no-op) without a `[metrics]` section.
pub struct Metrics {
    enabled: bool,
    pub(super) recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    shards: Vec<ShardMetrics>,
    statements: [Counter; RouteKind::ALL.len()],
    transactions: [Counter; RouteKind::ALL.len()],
    reloads: [Counter; 2],
    /// Error counters by SQLSTATE, made on first use.
    errors: Mutex<HashMap<[u8; 5], Counter>>,
}

impl Metrics {
    pub fn new(config: &Config) -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(CHECKOUT_WAIT.into()), CHECKOUT_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(QUERY_DURATION.into()), QUERY_BUCKETS)
            })
            // Infallible: the bucket lists are not empty.
            .expect("non-empty buckets")
            // Gauges are set at every scrape: one not set by the last one (a pool removed by a
            // reload) is dropped from the output.
            .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(1)))
            .build_recorder();
        for m in METRICS {
            let name = ::metrics::KeyName::from(m.name);
            let help = ::metrics::SharedString::from(m.help);
            match m.kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Gauge => recorder.describe_gauge(name, None, help),
                Kind::Histogram => recorder.describe_histogram(name, None, help),
            }
        }
        let counter = |name: &'static str, label: &'static str, value: &'static str| {
            let key = Key::from_parts(name, vec![Label::new(label, value)]);
            recorder.register_counter(&key, &METADATA)
        };
        let by_route =
            |name: &'static str| RouteKind::ALL.map(|k| counter(name, "route", k.label()));
        let shards = config
            .shards
            .iter()
            .map(|s| {
                let labels = vec![Label::new("shard", s.name.clone())];
                let key = |name: &'static str| Key::from_parts(name, labels.clone());
                ShardMetrics {
                    checkout_wait: recorder.register_histogram(&key(CHECKOUT_WAIT), &METADATA),
                    query: recorder.register_histogram(&key(QUERY_DURATION), &METADATA),
                }
            })
            .collect();
        Metrics {
            enabled: config.metrics.is_some(),
            statements: by_route(STATEMENTS),
            transactions: by_route(TRANSACTIONS),
            reloads: [
                counter(RELOADS, "result", "ok"),
                counter(RELOADS, "result", "failed"),
            ],
            shards,
            errors: Mutex::new(HashMap::new()),
            handle: recorder.handle(),
            recorder,
        }
    }

    /// Whether metrics are collected (a `[metrics]` section was configured).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Now, when metrics are collected (the start of something to time).
    #[inline]
    pub fn now(&self) -> Option<Instant> {
        self.enabled.then(Instant::now)
    }

    /// A checkout from a pool of `shard` that began at `started` ended.
    #[inline]
    pub fn checkout_waited(&self, shard: usize, started: Option<Instant>) {
        if let (Some(started), Some(m)) = (started, self.shards.get(shard)) {
            m.checkout_wait.record(started.elapsed().as_secs_f64());
        }
    }

    /// A checkout from a pool of `shard` found an idle connection without waiting.
    #[inline]
    pub fn checkout_at_once(&self, shard: usize) {
        if let (true, Some(m)) = (self.enabled, self.shards.get(shard)) {
            m.checkout_wait.record(0.0);
        }
    }

    /// A request to `shard`'s server sent at `started` got its ReadyForQuery at `now` (the
    /// session's clock reading for this wake-up); `ended`: a transaction that ran a statement
    /// ended with it.
    #[inline]
    pub fn request_done(&self, shard: usize, started: Option<Instant>, now: Instant, ended: bool) {
        if !self.enabled {
            return;
        }
        if let (Some(started), Some(m)) = (started, self.shards.get(shard)) {
            let took = now.saturating_duration_since(started);
            m.query.record(took.as_secs_f64());
        }
        if ended {
            self.transaction(RouteKind::SingleShard);
        }
    }

    /// A statement was carried out (or refused) as `kind`.
    #[inline]
    pub fn statement(&self, kind: RouteKind) {
        if self.enabled {
            self.statements[kind as usize].increment(1);
        }
    }

    /// A transaction ended after running as `kind`.
    #[inline]
    pub fn transaction(&self, kind: RouteKind) {
        if self.enabled {
            self.transactions[kind as usize].increment(1);
        }
    }

    /// A reload of the configuration succeeded (`ok`) or was refused.
    pub fn record_reload(&self, ok: bool) {
        if self.enabled {
            self.reloads[usize::from(!ok)].increment(1);
        }
    }

    /// An ErrorResponse with this SQLSTATE went to a client.
    pub fn error(&self, sqlstate: &str) {
        if !self.enabled {
            return;
        }
        let code: [u8; 5] = sqlstate.as_bytes().try_into().unwrap_or(*b"other");
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        let code = if errors.len() >= MAX_SQLSTATES && !errors.contains_key(&code) {
            *b"other"
        } else {
            code
        };
        errors
            .entry(code)
            .or_insert_with(|| {
                let value = String::from_utf8_lossy(&code).into_owned();
                let key = Key::from_parts(ERRORS, vec![Label::new("sqlstate", value)]);
                self.recorder.register_counter(&key, &METADATA)
            })
            .increment(1);
    }

    /// A whole ErrorResponse frame (tag, length, fields) went to a client: counts its SQLSTATE.
    pub fn error_frame(&self, frame: &[u8]) {
        if self.enabled {
            self.error(sqlstate_of(frame.get(5..).unwrap_or_default()));
        }
    }

    /// The Prometheus text of every metric (set the state gauges first: `scrape::render`).
    pub(super) fn render_text(&self) -> String {
        self.handle.render()
    }

    /// Drains recorded histogram samples into their buckets (run every few seconds).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    pub(super) fn gauge(&self, name: &'static str, labels: Vec<Label>, value: f64) {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
            .set(value);
    }
}

/// The SQLSTATE (`C` field) of an ErrorResponse body; `XX000` when it has none.
pub fn sqlstate_of(body: &[u8]) -> &str {
    body.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .and_then(|code| std::str::from_utf8(code).ok())
        .unwrap_or("XX000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_is_read_from_the_c_field() {
        assert_eq!(
            sqlstate_of(b"SERROR\0VERROR\0C42P01\0Mno such table\0\0"),
            "42P01"
        );
        assert_eq!(sqlstate_of(b"SERROR\0Mno code\0\0"), "XX000");
    }

    #[test]
    fn every_metric_has_the_pgshard_prefix_and_counters_end_in_total() {
        for m in METRICS {
            assert!(m.name.starts_with("pgshard_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
        }
    }
}
