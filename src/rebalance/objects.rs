//! What the mover asks the shards' catalogs (wal_level, columns, primary keys, replica
//! identity) and the objects it creates and drops (publication, replication slot, staging
//! tables). Every creation is "unless it exists", every drop "if it exists".

use tokio_postgres::Client;

use super::{MoveError, MovePlan, Shard, TableSpec};
use crate::sharding::KeyType;

/// A column copied by the move: its name and its type as SQL (`format_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_sql: String,
}

/// A moved table as both shards define it.
#[derive(Debug, Clone)]
pub struct Table {
    /// The name as configured.
    pub name: String,
    /// `"schema"."table"` on the source and on the target.
    pub source_sql: String,
    pub target_sql: String,
    /// `"pgshard_staging_<id>"."table"` on the target.
    pub staging_sql: String,
    /// Stored columns (not generated, not dropped) in the target's order.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key.
    pub primary_key: Vec<usize>,
    /// Index into `columns` of the shard key, and its declared type.
    pub key: usize,
    pub key_type: KeyType,
    /// The source's schema and table name, as logical decoding names them.
    pub source_schema: String,
    pub source_table: String,
}

impl Table {
    /// `"a", "b"`: every column, quoted.
    pub fn column_list(&self) -> String {
        list(self.columns.iter().map(|c| quote_ident(&c.name)))
    }

    pub fn primary_key_list(&self) -> String {
        list(
            self.primary_key
                .iter()
                .map(|&i| quote_ident(&self.columns[i].name)),
        )
    }

    /// `l."a" = r."a" AND l."b" = r."b"`: the primary key's columns of `left` and `right` equal.
    pub(crate) fn key_join(&self, left: &str, right: &str) -> String {
        self.primary_key
            .iter()
            .map(|&i| {
                let c = quote_ident(&self.columns[i].name);
                format!("{left}.{c} = {right}.{c}")
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

pub(crate) fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Refuses a source that cannot do logical decoding, naming the setting.
pub(crate) async fn check_wal_level(source: &Shard) -> Result<(), MoveError> {
    let row = source
        .client
        .query_one("SELECT current_setting('wal_level')", &[])
        .await
        .map_err(MoveError::pg(format!(
            "reading wal_level on {}",
            source.name
        )))?;
    let found: String = row.get(0);
    if found != "logical" {
        return Err(MoveError::WalLevel {
            server: source.name.clone(),
            found,
        });
    }
    Ok(())
}

/// One side's view of a table.
struct Side {
    schema: String,
    table: String,
    replica_identity: String,
    columns: Vec<Column>,
    primary_key: Vec<String>,
}

const TABLE_SQL: &str = "SELECT n.nspname::text, c.relname::text, c.relreplident::text \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)";
const COLUMNS_SQL: &str = "SELECT attname::text, format_type(atttypid, atttypmod) \
     FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped \
     AND attgenerated = '' ORDER BY attnum";
const PRIMARY_KEY_SQL: &str = "SELECT a.attname::text FROM pg_index i \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
     WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY a.attnum";

async fn side(shard: &Shard, side: &'static str, name: &str) -> Result<Side, MoveError> {
    let what = || format!("describing table {name} on {}", shard.name);
    let c = &shard.client;
    let row = c
        .query_opt(TABLE_SQL, &[&name])
        .await
        .map_err(MoveError::pg(what()))?
        .ok_or_else(|| MoveError::NoTable {
            table: name.to_string(),
            side,
            server: shard.name.clone(),
        })?;
    let columns = c
        .query(COLUMNS_SQL, &[&name])
        .await
        .map_err(MoveError::pg(what()))?;
    let keys = c
        .query(PRIMARY_KEY_SQL, &[&name])
        .await
        .map_err(MoveError::pg(what()))?;
    Ok(Side {
        schema: row.get(0),
        table: row.get(1),
        replica_identity: row.get(2),
        columns: columns
            .iter()
            .map(|r| Column {
                name: r.get(0),
                type_sql: r.get(1),
            })
            .collect(),
        primary_key: keys.iter().map(|r| r.get(0)).collect(),
    })
}

/// Describes every table of the plan on both shards, refusing what a move cannot carry.
pub(crate) async fn describe(
    plan: &MovePlan,
    source: &Shard,
    target: &Shard,
) -> Result<Vec<Table>, MoveError> {
    let mut tables: Vec<Table> = Vec::new();
    for spec in plan.tables() {
        let table = describe_one(plan, spec, source, target).await?;
        if let Some(other) = tables.iter().find(|t| t.source_table == table.source_table) {
            return Err(MoveError::StagingNameClash {
                first: other.name.clone(),
                second: table.name,
                name: other.source_table.clone(),
            });
        }
        tables.push(table);
    }
    Ok(tables)
}

async fn describe_one(
    plan: &MovePlan,
    spec: &TableSpec,
    source: &Shard,
    target: &Shard,
) -> Result<Table, MoveError> {
    let src = side(source, "source", &spec.name).await?;
    if src.primary_key.is_empty() {
        return Err(MoveError::NoPrimaryKey {
            table: spec.name.clone(),
        });
    }
    let identity = match src.replica_identity.as_str() {
        "d" | "f" => None,
        "n" => Some("NOTHING"),
        _ => Some("USING INDEX"),
    };
    if let Some(identity) = identity {
        return Err(MoveError::ReplicaIdentity {
            table: spec.name.clone(),
            identity: identity.to_string(),
        });
    }
    let dst = side(target, "target", &spec.name).await?;
    let mismatch = |detail: String| MoveError::TableMismatch {
        table: spec.name.clone(),
        detail,
    };
    let mut sorted_src = src.columns.clone();
    let mut sorted_dst = dst.columns.clone();
    sorted_src.sort_by(|a, b| a.name.cmp(&b.name));
    sorted_dst.sort_by(|a, b| a.name.cmp(&b.name));
    if sorted_src != sorted_dst {
        return Err(mismatch(format!(
            "columns ({}) on the source, ({}) on the target",
            shown(&sorted_src),
            shown(&sorted_dst)
        )));
    }
    let mut src_pk = src.primary_key.clone();
    let mut dst_pk = dst.primary_key.clone();
    src_pk.sort();
    dst_pk.sort();
    if src_pk != dst_pk {
        return Err(mismatch(format!(
            "primary key ({}) on the source, ({}) on the target",
            src_pk.join(", "),
            dst_pk.join(", ")
        )));
    }
    let columns = dst.columns;
    let index_of = |name: &str| columns.iter().position(|c| c.name == name);
    let key = index_of(&spec.key_column).ok_or_else(|| MoveError::NoKeyColumn {
        table: spec.name.clone(),
        column: spec.key_column.clone(),
    })?;
    let primary_key = src
        .primary_key
        .iter()
        .filter_map(|name| index_of(name))
        .collect();
    Ok(Table {
        name: spec.name.clone(),
        source_sql: format!("{}.{}", quote_ident(&src.schema), quote_ident(&src.table)),
        target_sql: format!("{}.{}", quote_ident(&dst.schema), quote_ident(&dst.table)),
        staging_sql: format!(
            "{}.{}",
            quote_ident(&plan.staging_schema()),
            quote_ident(&src.table)
        ),
        primary_key,
        key,
        key_type: spec.key_type,
        source_schema: src.schema,
        source_table: src.table,
        columns,
    })
}

fn shown(columns: &[Column]) -> String {
    list(columns.iter().map(|c| format!("{} {}", c.name, c.type_sql)))
}

/// The publication and slot on the source, the staging tables on the target.
pub(crate) async fn prepare(
    plan: &MovePlan,
    tables: &[Table],
    source: &mut Shard,
    target: &mut Shard,
    waits: &mut (dyn FnMut(Vec<String>) + Send),
) -> Result<(), MoveError> {
    let s = &source.client;
    let publication = plan.publication();
    let exists = s
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(MoveError::pg("looking for the move's publication"))?;
    if exists.is_none() {
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_ident(&publication),
            list(tables.iter().map(|t| t.source_sql.clone()))
        );
        s.batch_execute(&sql)
            .await
            .map_err(MoveError::pg(format!("creating publication {publication}")))?;
    }
    let slot = plan.replication_slot();
    if !slot_exists(s, &slot).await? {
        create_slot(s, &slot, waits).await?;
    }
    create_staging(plan, tables, target).await
}

/// Creates the logical replication slot `slot`. PostgreSQL builds it only once every
/// transaction that wrote and was open when it began has ended: while it waits, `waits` is told
/// every few seconds which ones (as far as this role may see them).
async fn create_slot(
    s: &Client,
    slot: &str,
    waits: &mut (dyn FnMut(Vec<String>) + Send),
) -> Result<(), MoveError> {
    let what = || {
        format!(
            "creating logical replication slot {slot} (needs a role with REPLICATION, and \
             max_replication_slots free)"
        )
    };
    // Each wait cancelled starts over with the transactions open then, so the waits double
    // (a workload of long overlapping writes would otherwise never let it finish); the last
    // one is not cancelled.
    let mut timeouts = [3_000, 6_000, 12_000, 24_000, 48_000].into_iter();
    loop {
        let timeout_ms = timeouts.next().unwrap_or(0);
        s.batch_execute(&format!("SET statement_timeout = {timeout_ms}"))
            .await
            .map_err(MoveError::pg(what()))?;
        let created = s
            .query_one(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')::text",
                &[&slot],
            )
            .await;
        s.batch_execute("RESET statement_timeout")
            .await
            .map_err(MoveError::pg(what()))?;
        match created {
            Ok(_) => return Ok(()),
            Err(e)
                if timeout_ms > 0
                    && e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) =>
            {
                waits(open_writers(s).await?);
            }
            Err(e) => return Err(MoveError::pg(what())(e)),
        }
    }
}

/// The transactions open on the source's server that wrote, oldest first, described.
async fn open_writers(s: &Client) -> Result<Vec<String>, MoveError> {
    let rows = s
        .query(
            "SELECT pid, coalesce(usename, '?') || '@' || coalesce(datname, '?'), \
               coalesce(state, '?'), extract(epoch FROM now() - xact_start)::int8 \
             FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
             ORDER BY xact_start",
            &[],
        )
        .await
        .map_err(MoveError::pg("listing the source's open transactions"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (pid, who, state) = (
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
            );
            format!(
                "pid {pid} ({who}, {state}, {} s)",
                r.get::<_, Option<i64>>(3).unwrap_or(0)
            )
        })
        .collect())
}

pub(crate) async fn slot_exists(client: &Client, slot: &str) -> Result<bool, MoveError> {
    let row = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(MoveError::pg("looking for the move's replication slot"))?;
    Ok(row.is_some())
}

/// The staging tables' one column of their own: each row's slot, so that a cutover takes the
/// rows of some slots (through an index) without reading the others.
pub(crate) const SLOT_COLUMN: &str = "pgshard_slot";

/// Staging tables: the target's columns (`LIKE`, with defaults and NOT NULL) and the primary
/// key only, so that replaying changes never trips a unique index in passing; plus the slot.
/// Unlogged: no WAL for the bulk copy and its index builds (the swap into the real tables is
/// logged). A crash of the target empties them; the journal then resumes in a new process,
/// which copies again.
async fn create_staging(
    plan: &MovePlan,
    tables: &[Table],
    target: &mut Shard,
) -> Result<(), MoveError> {
    let what = "creating the staging tables";
    let tx = target
        .client
        .transaction()
        .await
        .map_err(MoveError::pg(what))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(&plan.staging_schema())
    ))
    .await
    .map_err(MoveError::pg(what))?;
    for t in tables {
        let exists = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&t.staging_sql])
            .await
            .map_err(MoveError::pg(what))?;
        if !exists.get::<_, bool>(0) {
            let sql = format!(
                "CREATE UNLOGGED TABLE {} \
                 (LIKE {} INCLUDING DEFAULTS, {SLOT_COLUMN} smallint NOT NULL)",
                t.staging_sql, t.target_sql,
            );
            tx.batch_execute(&sql)
                .await
                .map_err(MoveError::pg(format!("creating {}", t.staging_sql)))?;
        }
    }
    tx.commit().await.map_err(MoveError::pg(what))?;
    // Also after a copy that was interrupted while the key was dropped.
    for t in tables {
        set_staging_key(&target.client, t, true).await?;
    }
    Ok(())
}

/// Drops the slot and publication (source) and the staging schema (target), if they exist.
pub(crate) async fn cleanup(
    plan: &MovePlan,
    source: &Shard,
    target: &Shard,
) -> Result<(), MoveError> {
    let slot = plan.replication_slot();
    source
        .client
        .query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(MoveError::pg(format!("dropping replication slot {slot}")))?;
    source
        .client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&plan.publication())
        ))
        .await
        .map_err(MoveError::pg("dropping the move's publication"))?;
    target
        .client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&plan.staging_schema())
        ))
        .await
        .map_err(MoveError::pg("dropping the staging schema"))
}

/// Adds (unless there) or drops (if there) the primary key of `t`'s staging table and the index
/// on its slots.
pub(crate) async fn set_staging_key(
    client: &Client,
    t: &Table,
    present: bool,
) -> Result<(), MoveError> {
    if present {
        build_staging_key(client, None, t).await
    } else {
        drop_staging_key(client, t).await
    }
}

/// The memory each index build of the staging tables may sort in: the server's
/// `maintenance_work_mem`, raised to this for the build's transaction (its default, 64 MB,
/// sorts a million keys on disk and lets PostgreSQL start at most one parallel worker).
const BUILD_MEMORY: &str = "256MB";

/// Builds the primary key and the slot index of `t`'s staging table (those missing), at once
/// when a `second` connection to the target is given: two `CREATE INDEX` share the table (both
/// take SHARE locks), and the primary key then adopts its unique index without a scan.
pub(crate) async fn build_staging_key(
    client: &Client,
    second: Option<&Client>,
    t: &Table,
) -> Result<(), MoveError> {
    let what = || format!("building the primary key of {}", t.staging_sql);
    let found = primary_key_of(client, t).await?;
    let memory = format!(
        "SELECT set_config('maintenance_work_mem', greatest(pg_size_bytes(current_setting(\
         'maintenance_work_mem')), pg_size_bytes('{BUILD_MEMORY}')) / 1024 || 'kB', true)"
    );
    let key = found.is_none().then(|| {
        let index = quote_ident(&format!("{}_pkey", t.source_table));
        format!(
            "BEGIN; {memory}; CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {} ({}); \
             ALTER TABLE {} ADD PRIMARY KEY USING INDEX {index}; COMMIT",
            t.staging_sql,
            t.primary_key_list(),
            t.staging_sql
        )
    });
    let index = quote_ident(&format!("{}_{SLOT_COLUMN}", t.source_table));
    let slots = format!(
        "BEGIN; {memory}; CREATE INDEX IF NOT EXISTS {index} ON {} ({SLOT_COLUMN}); COMMIT",
        t.staging_sql
    );
    async fn run(conn: &Client, sql: String, what: String) -> Result<(), MoveError> {
        conn.batch_execute(&sql).await.map_err(MoveError::pg(what))
    }
    match (key, second) {
        // The slot index's transaction takes no lock after its SHARE lock, so the primary
        // key's ALTER (an exclusive lock, taken after its own index is built) waits for it to
        // commit and nothing waits the other way round.
        (Some(key), Some(second)) => {
            tokio::try_join!(run(client, key, what()), run(second, slots, what())).map(|_| ())
        }
        (Some(key), None) => {
            run(client, key, what()).await?;
            run(client, slots, what()).await
        }
        (None, _) => run(client, slots, what()).await,
    }
}

async fn primary_key_of(client: &Client, t: &Table) -> Result<Option<String>, MoveError> {
    let row = client
        .query_opt(
            "SELECT conname::text FROM pg_constraint WHERE conrelid = to_regclass($1) \
             AND contype = 'p'",
            &[&t.staging_sql],
        )
        .await
        .map_err(MoveError::pg(format!(
            "reading the primary key of {}",
            t.staging_sql
        )))?;
    Ok(row.map(|row| row.get(0)))
}

/// Drops the primary key of `t`'s staging table and its slot index (those there).
async fn drop_staging_key(client: &Client, t: &Table) -> Result<(), MoveError> {
    let index = quote_ident(&format!("{}_{SLOT_COLUMN}", t.source_table));
    let schema = t.staging_sql.split('.').next().unwrap_or_default();
    let key = match primary_key_of(client, t).await? {
        Some(name) => format!(
            "ALTER TABLE {} DROP CONSTRAINT {}; ",
            t.staging_sql,
            quote_ident(&name)
        ),
        None => String::new(),
    };
    client
        .batch_execute(&format!("{key}DROP INDEX IF EXISTS {schema}.{index}"))
        .await
        .map_err(MoveError::pg(format!(
            "dropping the primary key of {}",
            t.staging_sql
        )))
}
