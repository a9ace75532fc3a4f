//! `pgshard locate`: prints the slot and owning shard of a shard key (or of every key read from
//! standard input), the way the router would place it. Glue only: parsing and hashing live in
//! `sharding`; this never connects.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::{Config, KeyType};
use crate::sharding::key_from_text;

/// Arguments of `pgshard locate`.
#[derive(Debug, clap::Args)]
pub struct LocateArgs {
    /// The config file whose shard map to use.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// The key value, as you would write it in SQL without quotes (e.g. 42, alice).
    #[arg(
        value_name = "KEY",
        allow_hyphen_values = true,
        required_unless_present = "stdin"
    )]
    pub key: Option<String>,
    /// Read keys from standard input, one per line, and print `KEY<TAB>SLOT<TAB>SHARD` for each
    /// (to check or plan where many rows belong).
    #[arg(long, conflicts_with = "key")]
    pub stdin: bool,
    /// Key type: bigint, integer, smallint, text, varchar or uuid (default: the table's key
    /// type with --table, else `[sharding] key_type`).
    #[arg(long = "type", value_name = "TYPE")]
    pub key_type: Option<KeyType>,
    /// A sharded table whose key type to use.
    #[arg(long, value_name = "NAME")]
    pub table: Option<String>,
}

/// Runs `pgshard locate`: prints `key 42 (bigint) -> slot 3418 -> shard s1`.
pub fn run(args: LocateArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)
        .with_context(|| format!("config file {} is not usable", args.config.display()))?;
    let key_type = match args.key_type {
        Some(key_type) => key_type,
        None => table_key_type(&config, args.table.as_deref())?,
    };
    let map = config.shard_map();
    let Some(text) = args.key else {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.context("reading keys from standard input")?;
            let key = key_from_text(key_type, &line)
                .map_err(|e| anyhow::anyhow!("line {}: {e} (SQLSTATE {})", n + 1, e.sqlstate()))?;
            let slot = key.slot();
            let shard = map.shard_name(map.shard_of_slot(slot));
            writeln!(out, "{line}\t{slot}\t{shard}")?;
        }
        out.flush()?;
        return Ok(());
    };
    let key = key_from_text(key_type, &text)
        .map_err(|e| anyhow::anyhow!("{e} (SQLSTATE {})", e.sqlstate()))?;
    let slot = key.slot();
    let shard = map.shard_name(map.shard_of_slot(slot));
    println!("key {key} ({key_type}) -> slot {slot} -> shard {shard}");
    Ok(())
}

/// Key type of `table`, or of the `[sharding]` section when no table is given.
fn table_key_type(config: &Config, table: Option<&str>) -> anyhow::Result<KeyType> {
    let sharding = &config.sharding;
    let Some(name) = table else {
        return Ok(sharding.key_type);
    };
    if let Some(table) = sharding.tables.iter().find(|t| t.name == name) {
        return Ok(table.key_type.unwrap_or(sharding.key_type));
    }
    if sharding.reference_tables.iter().any(|t| t == name) {
        anyhow::bail!("table {name:?} is a reference table: every shard holds all of its rows");
    }
    let names: Vec<&str> = sharding.tables.iter().map(|t| t.name.as_str()).collect();
    anyhow::bail!(
        "table {name:?} is not a sharded table; sharding.tables lists: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )
}
