//! What a reload keeps: pools whose login did not change (resized in place), the cancel
//! registry, client counts and the live shard map; what a live map change keeps; and what
//! each makes anew.

use super::*;

const BASE: &str = r#"
[server]
listen = "127.0.0.1:6432"
database = "app"

[pool]
size = 4

[[users]]
name = "app"
password = "app"

[[users]]
name = "other"
password = "secret"

[[shards]]
name = "s0"
primary = "127.0.0.1:1"
replicas = ["127.0.0.1:2"]
slots = "0-4095"
"#;

fn pool<'a>(shared: &'a Shared, addr: &str, user: &str) -> &'a ServerPool {
    let shard = &shared.shards[0];
    let backend = std::iter::once(&shard.primary)
        .chain(&shard.replicas)
        .find(|b| b.addr == addr)
        .expect("a backend at addr");
    &backend.pools[user]
}

fn same(a: &ServerPool, b: &ServerPool) -> bool {
    std::ptr::eq(a.manager(), b.manager())
}

#[tokio::test]
async fn a_reload_keeps_unchanged_pools_and_makes_changed_ones_anew() {
    let old = Shared::new(Config::from_toml_str(BASE).unwrap());
    old.clients.fetch_add(3, Ordering::Relaxed);
    let changed = BASE
        .replace("size = 4", "size = 2")
        .replace("password = \"secret\"", "password = \"new\"")
        .replace(
            "replicas = [\"127.0.0.1:2\"]",
            "replicas = [\"127.0.0.1:3\"]",
        );
    let new = old.reloaded(Config::from_toml_str(&changed).unwrap());

    let kept = pool(&new, "127.0.0.1:1", "app");
    assert!(
        same(pool(&old, "127.0.0.1:1", "app"), kept),
        "same login: kept"
    );
    assert_eq!(kept.status().size, 2, "and resized");
    assert!(
        !same(
            pool(&old, "127.0.0.1:1", "other"),
            pool(&new, "127.0.0.1:1", "other")
        ),
        "a changed password makes a new pool"
    );
    assert_eq!(new.shards[0].replicas[0].addr, "127.0.0.1:3");
    assert!(
        Arc::ptr_eq(&old.stats.clients, &new.stats.clients),
        "the client registry (cancel keys) carries over"
    );
    assert_eq!(
        new.clients.load(Ordering::Relaxed),
        3,
        "client counts carry over"
    );
    assert_eq!(new.generation, 1);
}

#[tokio::test]
async fn sessions_find_the_newest_generation_through_the_old_ones() {
    let first = Arc::new(Shared::new(Config::from_toml_str(BASE).unwrap()));
    assert!(!first.is_replaced() && first.newest().is_none());
    let second = Arc::new(first.reloaded(Config::from_toml_str(BASE).unwrap()));
    first.replace_with(second.clone());
    let third = Arc::new(second.reloaded(Config::from_toml_str(BASE).unwrap()));
    second.replace_with(third.clone());
    assert!(first.is_replaced());
    let newest = first.newest().expect("replaced");
    assert!(Arc::ptr_eq(&newest, &third));
    assert_eq!(newest.generation, 2);
}

#[tokio::test]
async fn a_live_map_is_a_new_generation_keeping_pools_and_a_reload_keeps_it() {
    let two = format!(
        "{}\n[[shards]]\nname = \"s1\"\nprimary = \"127.0.0.1:4\"\nslots = \"\"\n",
        BASE
    );
    let old = Shared::new(Config::from_toml_str(&two).unwrap());
    assert_eq!(old.router.load().shard_map().shard_of_slot(7), 0);
    let names: Vec<String> = vec!["s0".into(), "s1".into()];
    let mut owner = vec![0u16; 4096];
    owner[7] = 1;
    let live = ShardMap::from_owners(names, owner, 5).unwrap();
    let next = old.with_map(live.clone());
    assert_eq!(next.generation, old.generation + 1);
    assert_eq!(next.router.load().shard_map(), &live);
    assert!(
        same(
            pool(&old, "127.0.0.1:1", "app"),
            pool(&next, "127.0.0.1:1", "app")
        ),
        "pools kept"
    );
    assert_eq!(
        old.router.load().shard_map().shard_of_slot(7),
        0,
        "the old generation keeps its map for the transactions still on it"
    );
    // A reload of the same file (its slots give slot 7 to s0) and of one adding a shard.
    let three =
        format!("{two}\n[[shards]]\nname = \"s2\"\nprimary = \"127.0.0.1:5\"\nslots = \"\"\n");
    let reloaded = next.reloaded(Config::from_toml_str(&three).unwrap());
    let map = reloaded.router.load().shard_map().clone();
    assert_eq!((map.version(), map.shard_of_slot(7), map.len()), (5, 1, 3));
}
