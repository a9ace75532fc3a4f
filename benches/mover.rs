//! Bulk copy throughput of the slot mover (`pgshard::rebalance`): two local primaries at
//! `wal_level = logical`, a table of `PGSHARD_BENCH_ROWS` rows (default 1,000,000, about 100
//! bytes each) on the source, then a copy of every slot and one of a quarter of the slots into
//! the target's staging tables, each followed by a verify, and after the first a catch-up of
//! 100,000 updates. Prints rows, MB copied, MB/s and changes applied per second.
//! A measurement, not a test: `cargo bench --bench mover`.

use std::time::Instant;

use pgshard::localpg::{ClusterOptions, LocalCluster};
use pgshard::rebalance::{MovePlan, Mover, Shard, SlotSet, TableSpec, TargetSide};
use pgshard::sharding::KeyType;

const TABLE: &str = "CREATE TABLE bench_rows (id bigint PRIMARY KEY, user_id bigint NOT NULL, \
     created timestamptz NOT NULL, payload text NOT NULL)";

fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::var("PGSHARD_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let opts = ClusterOptions {
        replicas: 0,
        databases: vec![("app".into(), "postgres".into())],
        logical: true,
        ..ClusterOptions::default()
    };
    let (mut a, mut b) = std::thread::scope(|s| {
        let a = s.spawn(|| LocalCluster::start(&opts));
        let b = s.spawn(|| LocalCluster::start(&opts));
        (a.join().expect("start a"), b.join().expect("start b"))
    });
    let (a_ref, b_ref) = (
        a.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?,
        b.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?,
    );
    for c in [a_ref, b_ref] {
        c.psql(c.primary_port(), "app", TABLE)?;
    }
    a_ref.psql(
        a_ref.primary_port(),
        "app",
        &format!(
            "INSERT INTO bench_rows SELECT i, i % 100000, now(), \
             rpad(md5(i::text), 64, 'x') FROM generate_series(1, {rows}) i"
        ),
    )?;
    a_ref.psql(a_ref.primary_port(), "app", "VACUUM ANALYZE bench_rows")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(run(a_ref, b_ref, rows));
    if let Ok(a) = a.as_mut() {
        a.stop();
    }
    if let Ok(b) = b.as_mut() {
        b.stop();
    }
    result
}

async fn run(a: &LocalCluster, b: &LocalCluster, rows: u64) -> anyhow::Result<()> {
    let conninfo = |c: &LocalCluster| {
        format!(
            "host=127.0.0.1 port={} user=postgres password=postgres dbname=app",
            c.primary_port()
        )
    };
    let table = TableSpec {
        name: "bench_rows".into(),
        key_column: "user_id".into(),
        key_type: KeyType::Bigint,
    };
    println!("table of {rows} rows; copy into staging, then verify against the source");
    for (id, slots, label) in [
        ("bench_all", SlotSet::from_ranges([0..=4095]), "every slot"),
        (
            "bench_quarter",
            SlotSet::from_ranges([0..=1023]),
            "slots 0-1023",
        ),
    ] {
        let plan = MovePlan::new(id, slots, vec![table.clone()])?;
        let source = Shard::connect("a", &conninfo(a)).await?;
        let target = Shard::connect("b", &conninfo(b)).await?;
        let mut mover = Mover::open(plan, source, target).await?;
        mover.prepare().await?;
        let stats = mover.copy(|_| {}).await?;
        let verify_start = Instant::now();
        let checks = mover.verify(TargetSide::Staging).await?;
        let verify = verify_start.elapsed();
        anyhow::ensure!(
            checks.iter().all(|c| c.equal()),
            "verify failed: {checks:?}"
        );
        if id == "bench_all" {
            catch_up(&mut mover, a).await?;
        }
        println!(
            "{label:>13}: scanned {} rows, copied {} rows, {:.1} MB in {:.2} s = {:.1} MB/s \
             ({:.0} rows/s scanned); verify {:.2} s",
            stats.rows_scanned,
            stats.rows_copied,
            stats.bytes_copied as f64 / 1e6,
            stats.elapsed.as_secs_f64(),
            stats.mb_per_s(),
            stats.rows_scanned as f64 / stats.elapsed.as_secs_f64(),
            verify.as_secs_f64(),
        );
        mover.cleanup().await?;
    }
    Ok(())
}

/// 100,000 updates on the source (one transaction), then catch-up rounds until they are applied.
async fn catch_up(mover: &mut Mover, a: &LocalCluster) -> anyhow::Result<()> {
    a.psql(
        a.primary_port(),
        "app",
        "UPDATE bench_rows SET payload = payload || 'y' WHERE id <= 100000",
    )?;
    let started = Instant::now();
    let (mut applied, mut rounds) = (0, 0);
    loop {
        let round = mover.catch_up(10_000).await?;
        applied += round.applied;
        rounds += 1;
        if round.reached {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "    catch-up: {applied} updates applied in {rounds} rounds, {seconds:.2} s = {:.0} \
         changes/s",
        applied as f64 / seconds
    );
    Ok(())
}
