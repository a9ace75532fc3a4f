//! The live shard map in a catalog, against real shards: created on first start from the
//! config (and the config's disagreement with it warned), followed by several routers
//! sharing it, kept across a reload, and read by `pgshard map show` and `pgshard rebalance
//! plan` through the real binary. Each test keeps its catalog in its own database of the
//! first shard's cluster, and uses its own keys.

mod support;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pgshard::catalog;
use pgshard::config::Config;
use pgshard::control::Control;
use pgshard::sharding::{KeyValue, SLOT_COUNT};
use tokio::net::TcpListener;

/// How long a router may take to follow a change before the test fails (a deadline, not a
/// measurement: routers normally follow within milliseconds).
const DEADLINE: Duration = Duration::from_secs(60);

/// Everything pgshard logs in this test process.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init()
            .expect("the only tracing subscriber of this test binary");
        buffer
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A fresh database `db` on the first shard's cluster, owned by `app`, and the connection
/// string of a catalog in it.
fn catalog_db(db: &str) -> String {
    let [s0, _] = support::shard_clusters();
    s0.psql(
        s0.primary_port(),
        "postgres",
        &format!("CREATE DATABASE {db} OWNER app"),
    )
    .expect("creating the catalog database");
    format!(
        "host=127.0.0.1 port={} dbname={db} user=app password=app",
        s0.primary_port()
    )
}

/// The two-shard test config, reading from primaries, with its catalog at `url` and `slots`
/// replacing its shards' slot specs.
fn config_with_catalog(url: &str, slots: [&str; 2]) -> String {
    let mut text = support::two_shard_config(support::shard_clusters());
    for (old, new) in ["0-2047", "2048-4095"].iter().zip(slots) {
        text = text.replacen(
            &format!("slots = \"{old}\""),
            &format!("read_from = \"primary\"\nslots = \"{new}\""),
            1,
        );
    }
    text.replacen(
        "[sharding]",
        &format!("[catalog]\nurl = \"{url}\"\npoll_interval_ms = 200\n\n[sharding]"),
        1,
    )
}

/// A key owned by shard `s0` in the test map, and its slot.
fn key_on_s0(from: i64) -> (i64, u16) {
    let key = (from..)
        .find(|&k| support::shard_of_id(k) == 0)
        .expect("some key");
    (key, KeyValue::Int(key).slot())
}

/// Writes the row `(key, shard name)` into `users` straight on each shard's primary, so a
/// read through pgshard tells which shard it was routed to.
async fn mark_both_shards(key: i64) {
    for (i, cluster) in support::shard_clusters().iter().enumerate() {
        let direct = support::connect_direct(cluster.primary_port()).await;
        direct
            .execute(
                "INSERT INTO users (user_id, name) VALUES ($1, $2)",
                &[&key, &format!("s{i}")],
            )
            .await
            .expect("marking the key on a shard");
    }
}

/// The shard a router reads `key` from.
async fn routed_to(client: &tokio_postgres::Client, key: i64) -> String {
    client
        .query_one(
            &format!("SELECT name FROM users WHERE user_id = {key}"),
            &[],
        )
        .await
        .expect("reading the key through pgshard")
        .get(0)
}

/// Waits (up to [`DEADLINE`], else fails) until `client` reads `key` from `shard`.
async fn wait_routed(client: &tokio_postgres::Client, key: i64, shard: &str) {
    let start = Instant::now();
    loop {
        if routed_to(client, key).await == shard {
            // Reported, never asserted on.
            eprintln!("key {key} routed to {shard} after {:?}", start.elapsed());
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "key {key} still not routed to {shard} after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn catalog_client(url: &str) -> tokio_postgres::Client {
    catalog::connect(url, None)
        .await
        .expect("connecting to the catalog")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_created_once_and_the_config_disagreement_is_warned() {
    logs();
    let url = catalog_db("cat_create");
    let config = config_with_catalog(&url, ["0-2047", "2048-4095"]);
    // Two routers starting at once: one creates the catalog, the other loads it.
    let (a, b) = tokio::join!(support::start_proxy(&config), support::start_proxy(&config));
    let (ca, cb) = (a.connect().await, b.connect().await);
    let mut client = catalog_client(&url).await;
    let live = catalog::load(&mut client)
        .await
        .expect("the catalog exists");
    assert_eq!(live.epoch, 1);
    assert_eq!(live.owners.len(), usize::from(SLOT_COUNT));
    assert_eq!(live.owners[2047], "s0");
    assert_eq!(live.owners[2048], "s1");
    let epochs: i64 = client
        .query_one("SELECT count(*) FROM pgshard.map_epoch", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(epochs, 1);
    let (key, _) = key_on_s0(7_000_000);
    mark_both_shards(key).await;
    assert_eq!(routed_to(&ca, key).await, "s0");
    assert_eq!(routed_to(&cb, key).await, "s0");

    // A router whose config gives slots 1024-2047 to s1 routes by the live map, and says so.
    let other = config_with_catalog(&url, ["0-1023", "1024-4095"]);
    let c = support::start_proxy(&other).await;
    let cc = c.connect().await;
    let in_dispute = (7_100_000..)
        .find(|&k| (1024..=2047).contains(&KeyValue::Int(k).slot()))
        .unwrap();
    mark_both_shards(in_dispute).await;
    assert_eq!(routed_to(&cc, in_dispute).await, "s0");
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(
        text.contains("disagree with the live shard map")
            && text.contains("slots 1024-2047 are s1's in the config but s0's"),
        "no warning naming the slots in:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_sharing_a_catalog_follow_a_slot_move() {
    let url = catalog_db("cat_follow");
    let config = config_with_catalog(&url, ["0-2047", "2048-4095"]);
    let a = support::start_proxy(&config).await;
    let b = support::start_proxy(&config).await;
    let (ca, cb) = (a.connect().await, b.connect().await);
    let (key, slot) = key_on_s0(7_200_000);
    mark_both_shards(key).await;
    assert_eq!(routed_to(&ca, key).await, "s0");
    assert_eq!(routed_to(&cb, key).await, "s0");

    // A transaction open across the change finishes on the map it started with.
    let in_flight = a.connect().await;
    in_flight.batch_execute("BEGIN").await.unwrap();
    assert_eq!(routed_to(&in_flight, key).await, "s0");

    let mut client = catalog_client(&url).await;
    let epoch = catalog::set_owner(&mut client, &[slot], "s1", 1)
        .await
        .expect("moving the slot in the catalog");
    assert_eq!(epoch, 2);
    wait_routed(&ca, key, "s1").await;
    wait_routed(&cb, key, "s1").await;
    assert_eq!(routed_to(&in_flight, key).await, "s0", "mid-transaction");
    in_flight.batch_execute("COMMIT").await.unwrap();
    assert_eq!(routed_to(&in_flight, key).await, "s1", "after its commit");

    // A change prepared against an old epoch is refused and changes nothing.
    let stale = catalog::set_owner(&mut client, &[slot], "s0", 1).await;
    assert!(
        matches!(
            stale,
            Err(catalog::CatalogError::EpochMoved {
                expected: 1,
                found: 2
            })
        ),
        "{stale:?}"
    );
    assert_eq!(catalog::load(&mut client).await.unwrap().epoch, 2);

    // Moving it back is followed too, and a router started now starts with the live map.
    catalog::set_owner(&mut client, &[slot], "s0", 2)
        .await
        .unwrap();
    wait_routed(&ca, key, "s0").await;
    wait_routed(&cb, key, "s0").await;
    catalog::set_owner(&mut client, &[slot], "s1", 3)
        .await
        .unwrap();
    let late = support::start_proxy(&config).await;
    assert_eq!(routed_to(&late.connect().await, key).await, "s1");

    // A change without a notification (one lost, say) is found by polling.
    client
        .batch_execute(&format!(
            "BEGIN; UPDATE pgshard.slots SET shard = 's0' WHERE slot = {slot}; \
             UPDATE pgshard.map_epoch SET epoch = epoch + 1; COMMIT"
        ))
        .await
        .unwrap();
    wait_routed(&ca, key, "s0").await;
    wait_routed(&cb, key, "s0").await;

    // The routers' catalog connections are killed: they reconnect and follow the next change.
    let s0 = support::shard_clusters()[0];
    let admin = support::connect_direct(s0.primary_port()).await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = 'cat_follow' AND application_name = 'pgshard-catalog'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        killed >= 2,
        "the two routers' listeners (and this test's client): {killed}"
    );
    let mut client = catalog_client(&url).await;
    let epoch = catalog::load(&mut client).await.unwrap().epoch;
    catalog::set_owner(&mut client, &[slot], "s1", epoch)
        .await
        .unwrap();
    wait_routed(&ca, key, "s1").await;
    wait_routed(&cb, key, "s1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_live_map() {
    let url = catalog_db("cat_reload");
    let text = config_with_catalog(&url, ["0-2047", "2048-4095"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgshard.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_toml_str(&text).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (control, commands) = Control::channel();
    let server = tokio::spawn(pgshard::server::serve(
        config,
        Some(path.clone()),
        listener,
        (control.clone(), commands),
        std::future::pending(),
    ));
    let url_app = format!("postgres://app:app@127.0.0.1:{port}/app");
    let (client, connection) = tokio_postgres::connect(&url_app, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let (key, slot) = key_on_s0(7_300_000);
    mark_both_shards(key).await;
    assert_eq!(routed_to(&client, key).await, "s0");
    let mut cat = catalog_client(&url).await;
    catalog::set_owner(&mut cat, &[slot], "s1", 1)
        .await
        .unwrap();
    wait_routed(&client, key, "s1").await;

    // The file still gives the slot to s0; a reload (with another pool size) keeps the live map.
    std::fs::write(&path, text.replacen("size = 4", "size = 5", 1)).unwrap();
    control.request_reload().await.expect("the reload succeeds");
    assert_eq!(routed_to(&client, key).await, "s1");
    let (fresh, connection) = tokio_postgres::connect(&url_app, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    assert_eq!(routed_to(&fresh, key).await, "s1");

    // With a catalog the file's slots are only the initial assignment: editing them reloads,
    // and the live map still routes.
    let edited = text
        .replacen("size = 4", "size = 5", 1)
        .replacen("\"0-2047\"", "\"0-1023\"", 1)
        .replacen("\"2048-4095\"", "\"1024-4095\"", 1);
    std::fs::write(&path, edited).unwrap();
    control
        .request_reload()
        .await
        .expect("a reload with other slots");
    assert_eq!(routed_to(&fresh, key).await, "s1");
    let other = (7_300_000..)
        .find(|&k| (1024..=2047).contains(&KeyValue::Int(k).slot()) && k != key)
        .unwrap();
    mark_both_shards(other).await;
    assert_eq!(
        routed_to(&fresh, other).await,
        "s0",
        "the file's new slots do not route"
    );
    control.request_shutdown();
    let _ = server.await;
}

/// Runs the pgshard binary with `args`; returns its standard output, failing on an error.
fn pgshard(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .args(args)
        .output()
        .expect("running pgshard");
    assert!(
        out.status.success(),
        "pgshard {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_show_and_rebalance_plan_read_the_live_map() {
    let url = catalog_db("cat_cli");
    let two = config_with_catalog(&url, ["0-2047", "2048-4095"]);
    let proxy = support::start_proxy(&two).await;
    drop(proxy.connect().await);
    let mut cat = catalog_client(&url).await;
    let slots: Vec<u16> = (0..100).collect();
    catalog::set_owner(&mut cat, &slots, "s1", 1).await.unwrap();

    // A third shard, owning no slots yet.
    let s1 = support::shard_clusters()[1];
    let three = format!(
        "{two}\n[[shards]]\nname = \"s2\"\nprimary = \"{}\"\nslots = \"\"\n",
        s1.primary_addr()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir.path().join("three.toml"), &three);
    let shown = pgshard(&["map", "show", "--config", &file]);
    assert_eq!(
        shown,
        "epoch 2\nshard\tslots\tcount\n\
         s0\t100-2047\t1948\n\
         s1\t0-99,2048-4095\t2148\n\
         s2\t-\t0\n\
         # slots 0-99 are s0's in the config, s1's in the live map\n"
    );

    let plan_path = dir.path().join("plan.toml");
    let printed = pgshard(&[
        "rebalance",
        "plan",
        "--config",
        &file,
        "--out",
        &plan_path.display().to_string(),
    ]);
    let moves: Vec<&str> = printed.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        printed.starts_with("# live map epoch 2: 2 moves, 1365 slots\n"),
        "{printed}"
    );
    assert_eq!(
        moves,
        vec![
            format!("pgshard rebalance move --config {file} --slots 1465-2047 --to s2"),
            format!("pgshard rebalance move --config {file} --slots 3314-4095 --to s2"),
        ],
        "{printed}"
    );
    let plan_text = std::fs::read_to_string(&plan_path).unwrap();
    let parsed = pgshard::cli::rebalance::PlanFile::parse(&plan_text).expect("a plan file");
    assert_eq!((parsed.epoch, parsed.moves.len()), (2, 2));
    assert_eq!(parsed.moves[1].slot_range().unwrap(), 3314..=4095);
    let plan: toml::Value = toml::from_str(&plan_text).expect("the plan file is TOML");
    assert_eq!(plan["epoch"].as_integer(), Some(2));
    assert_eq!(plan["by"].as_str(), Some("slots"));
    let planned = plan["moves"].as_array().unwrap();
    assert_eq!(planned.len(), 2);
    assert_eq!(planned[0]["slots"].as_str(), Some("1465-2047"));
    assert_eq!(planned[0]["from"].as_str(), Some("s0"));
    assert_eq!(planned[1]["to"].as_str(), Some("s2"));

    // By rows, over the two shards: 30 rows on s0's slots and none on s1's move s0's rows
    // toward s1 until each holds half.
    let mut keys = Vec::new();
    let mut k = 7_400_000i64;
    while keys.len() < 30 {
        if (100..=2047).contains(&KeyValue::Int(k).slot()) {
            keys.push(k);
        }
        k += 1;
    }
    let direct = support::connect_direct(support::shard_clusters()[0].primary_port()).await;
    for key in &keys {
        direct
            .execute(
                "INSERT INTO orders (user_id, note) VALUES ($1, 'plan')",
                &[key],
            )
            .await
            .unwrap();
    }
    let file2 = write(&dir.path().join("two.toml"), &two);
    let by_rows = pgshard(&["rebalance", "plan", "--config", &file2, "--by", "rows"]);
    assert!(by_rows.contains("\npgshard rebalance move"), "{by_rows}");
    assert!(
        by_rows.lines().filter(|l| !l.starts_with('#')).all(|l| l
            .starts_with(&format!("pgshard rebalance move --config {file2} --slots "))
            && l.ends_with(" --to s1")),
        "{by_rows}"
    );
}

/// A router cut off from its catalog longer than `fence_after` holds the slots of the moves
/// unfinished at its last contact (a mover would stop waiting for it and could flip them), and
/// only those: a statement on another slot runs. Once its lease ran out it holds every slot (a
/// move could have begun since), a statement on no slot still runs; the held ones run once the
/// catalog is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_cut_off_from_its_catalog_fences_unfinished_moves_then_every_slot() {
    // A catalog of its own, on a cluster this test stops and starts.
    let opts = pgshard::localpg::ClusterOptions {
        replicas: 0,
        users: vec![("app".into(), "app".into())],
        databases: vec![("meta".into(), "app".into())],
        ..pgshard::localpg::ClusterOptions::default()
    };
    let mut meta = pgshard::localpg::LocalCluster::start(&opts).expect("a catalog cluster");
    let url = format!(
        "host=127.0.0.1 port={} dbname=meta user=app password=app",
        meta.primary_port()
    );
    let lease = Duration::from_millis(4000);
    let config = config_with_catalog(&url, ["0-2047", "2048-4095"]).replacen(
        "poll_interval_ms = 200",
        &format!("poll_interval_ms = 200\nlease_ms = {}", lease.as_millis()),
        1,
    );
    let router = support::start_proxy(&config).await;
    let client = router.connect().await;
    let (held_key, held_slot) = key_on_s0(7_400_000);
    let (free_key, free_slot) = (7_400_001..)
        .map(|k| (k, KeyValue::Int(k).slot()))
        .find(|&(k, s)| support::shard_of_id(k) == 0 && s != held_slot)
        .unwrap();
    mark_both_shards(held_key).await;
    mark_both_shards(free_key).await;
    // An unfinished move of the held key's slot, as a mover records it.
    let catalog = catalog_client(&url).await;
    catalog
        .execute(
            "INSERT INTO pgshard.moves (move_id, slots, source, target, step) \
             VALUES ('mfence', $1, 's0', 's1', 'copied')",
            &[&held_slot.to_string()],
        )
        .await
        .unwrap();
    drop(catalog);
    // Routers read the journal at each poll (200 ms here).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        routed_to(&client, held_key).await,
        "s0",
        "not fenced while in contact"
    );

    meta.stop_primary().expect("stopping the catalog");
    let cut = Instant::now();
    let fence = catalog::watch::fence_after(Duration::from_millis(200));
    tokio::time::sleep(fence + Duration::from_millis(1000)).await;
    assert_eq!(
        routed_to(&client, free_key).await,
        "s0",
        "another slot is not fenced"
    );
    assert!(
        cut.elapsed() < lease,
        "the test checked the free slot within the lease"
    );
    let held = {
        let client = router.connect().await;
        tokio::spawn(async move { routed_to(&client, held_key).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "a statement on the fenced slot waits");
    eprintln!("fenced slot {held_slot}, free slot {free_slot}");

    // Past the lease: every slot waits, a statement on none still runs.
    tokio::time::sleep((lease + Duration::from_millis(1000)).saturating_sub(cut.elapsed())).await;
    let free = {
        let client = router.connect().await;
        tokio::spawn(async move { routed_to(&client, free_key).await })
    };
    let unsharded: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(unsharded, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !free.is_finished(),
        "past the lease a statement on any slot waits"
    );

    meta.start_primary().expect("starting the catalog again");
    for waiting in [held, free] {
        let routed = tokio::time::timeout(DEADLINE, waiting)
            .await
            .expect("the fences lift once the catalog is back")
            .unwrap();
        assert_eq!(routed, "s0");
    }
    drop(router);
    meta.stop();
}
