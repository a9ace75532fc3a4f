//! `pgshard check`: loads and validates a config file, then prints what it describes.
//! Glue only: the checks themselves live in `config`; this never connects to a server.

use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::{AuthMethod, ClientTlsMode, Config, PoolMode};

/// Arguments of `pgshard check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The config file to check.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
}

/// Runs `pgshard check`: prints a summary and succeeds, or fails with the key at fault.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)
        .with_context(|| format!("config file {} is not usable", args.config.display()))?;
    print!("{}", summary(&args.config, &config));
    Ok(())
}

/// What the config sets up, one aspect per line.
fn summary(path: &std::path::Path, config: &Config) -> String {
    let mut out = String::new();
    let server = &config.server;
    let pool = &config.pool;
    let sharding = &config.sharding;
    // Writing to a String cannot fail, hence the ignored results below.
    let _ = writeln!(out, "config {} is valid", path.display());
    let _ = writeln!(
        out,
        "  listen     {} (database {}, pool mode {}, auth {})",
        server.listen,
        server.database,
        pool_mode_name(server.pool_mode),
        auth_method_name(server.auth_method)
    );
    let _ = writeln!(
        out,
        "  pool       {} server connections per backend and user, checkout timeout {} ms",
        pool.size, pool.checkout_timeout_ms
    );
    let _ = writeln!(out, "  tls        {}", tls_text(config));
    let users: Vec<&str> = config.users.iter().map(|u| u.name.as_str()).collect();
    let _ = writeln!(out, "  users      {}", users.join(", "));
    let tables: Vec<String> = sharding
        .tables
        .iter()
        .map(|t| {
            let column = t.key_column.as_deref().unwrap_or(&sharding.key_column);
            let key_type = t.key_type.unwrap_or(sharding.key_type);
            format!("{} by {column} ({key_type})", t.name)
        })
        .collect();
    let _ = writeln!(out, "  sharded    {}", none_if_empty(&tables.join(", ")));
    let _ = writeln!(
        out,
        "  reference  {}",
        none_if_empty(&sharding.reference_tables.join(", "))
    );
    // Validation guarantees at least one shard, so `shards[0]` exists.
    let default_shard = sharding
        .default_shard
        .as_deref()
        .unwrap_or(&config.shards[0].name);
    let _ = writeln!(out, "  other tables on shard {default_shard}");
    let map = config.shard_map();
    for (i, shard) in config.shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "  shard {}: slots {}; primary {}; replicas {}; database {}",
            shard.name,
            ranges_text(&map.ranges_of(i)),
            shard.primary,
            none_if_empty(&shard.replicas.join(", ")),
            config.shard_database(shard)
        );
    }
    out
}

fn ranges_text(ranges: &[RangeInclusive<u16>]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|r| {
            if r.start() == r.end() {
                r.start().to_string()
            } else {
                format!("{}-{}", r.start(), r.end())
            }
        })
        .collect();
    parts.join(",")
}

fn none_if_empty(text: &str) -> &str {
    if text.is_empty() {
        "none"
    } else {
        text
    }
}

/// `clients <mode> (certificate <file>), servers <mode>`.
fn tls_text(config: &Config) -> String {
    let clients = match config.server.effective_tls_mode() {
        ClientTlsMode::Disable => "disable",
        ClientTlsMode::Allow => "allow",
        ClientTlsMode::Require => "require",
    };
    let mut text = format!("clients {clients}");
    if let Some(cert) = config
        .server
        .tls_cert
        .as_ref()
        .filter(|_| clients != "disable")
    {
        let _ = write!(text, " (certificate {})", cert.display());
    }
    let backend = &config.backend_tls;
    let _ = write!(text, ", servers {}", backend.mode.as_str());
    if let Some(ca) = backend
        .ca
        .as_ref()
        .filter(|_| backend.mode.as_str() != "disable")
    {
        let _ = write!(text, " (CA {})", ca.display());
    }
    text
}

fn pool_mode_name(mode: PoolMode) -> &'static str {
    match mode {
        PoolMode::Transaction => "transaction",
        PoolMode::Session => "session",
    }
}

fn auth_method_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::ScramSha256 => "scram-sha-256",
        AuthMethod::Md5 => "md5",
        AuthMethod::Trust => "trust",
    }
}
