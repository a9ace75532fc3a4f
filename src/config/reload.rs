//! What a reload may change: a new config is checked against the running one, and a change
//! that needs a restart (or `pgshard rebalance`) is refused naming its key. Pure: compares two
//! validated configs, nothing else.

use super::{Config, ConfigError};
use crate::sharding::SLOT_COUNT;

impl Config {
    /// Whether `self` (just loaded and validated) can replace `running` without a restart:
    /// the listen address, the pool mode, `[sharding]` and `[catalog]` stay; shards keep their
    /// names and order (new ones are added at the end) and, without a catalog, every slot keeps
    /// its owner (with one, the file's slots may change: the live map routes, and stays).
    pub fn check_reload_from(&self, running: &Config) -> Result<(), ConfigError> {
        let restart = |key: &str| ConfigError::Invalid {
            key: key.to_string(),
            problem: "changed, which needs a restart: put back the running value to reload the \
                      rest, or restart pgshard"
                .to_string(),
        };
        if self.server.listen != running.server.listen {
            return Err(restart("server.listen"));
        }
        if self.server.listen_backlog != running.server.listen_backlog {
            return Err(restart("server.listen_backlog"));
        }
        if self.server.pool_mode != running.server.pool_mode {
            return Err(restart("server.pool_mode"));
        }
        if self.sharding != running.sharding {
            return Err(restart("sharding"));
        }
        if self.metrics != running.metrics {
            return Err(restart("metrics.listen"));
        }
        if self.catalog != running.catalog {
            return Err(restart("catalog"));
        }
        self.check_shards_kept(running)
    }

    fn check_shards_kept(&self, running: &Config) -> Result<(), ConfigError> {
        if self.shards.len() < running.shards.len() {
            let gone = &running.shards[self.shards.len()].name;
            return Err(ConfigError::Invalid {
                key: "shards".to_string(),
                problem: format!(
                    "shard {gone:?} is gone; removing a shard needs a restart after its slots \
                     have been moved elsewhere"
                ),
            });
        }
        for (i, (new, old)) in self.shards.iter().zip(&running.shards).enumerate() {
            if new.name != old.name {
                return Err(ConfigError::Invalid {
                    key: format!("shards[{i}].name"),
                    problem: format!(
                        "is {:?}, the running config has {:?} here; shards keep their names and \
                         order across a reload (add new shards at the end)",
                        new.name, old.name
                    ),
                });
            }
        }
        if self.catalog.is_some() {
            // The live map in the catalog is what routes, and a reload keeps it: the file's
            // slots are only the initial assignment, and may be edited to match the live map.
            return Ok(());
        }
        let (new_map, old_map) = (self.shard_map(), running.shard_map());
        for slot in 0..SLOT_COUNT {
            let (now, before) = (new_map.shard_of_slot(slot), old_map.shard_of_slot(slot));
            if now != before {
                return Err(ConfigError::Invalid {
                    key: format!("shards[{now}].slots"),
                    problem: format!(
                        "slot {slot} would move from shard {:?} to {:?}; a reload never moves \
                         slots (give every running shard its current slots, and new shards \
                         slots = \"\")",
                        running.shards[before].name, self.shards[now].name
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:6432"
database = "app"

[[users]]
name = "app"
password = "app"

[[shards]]
name = "s0"
primary = "127.0.0.1:5432"
slots = "0-2047"

[[shards]]
name = "s1"
primary = "127.0.0.1:5433"
slots = "2048-4095"
"#;

    fn reload(from: &str, to: &str) -> Result<(), String> {
        let old = Config::from_toml_str(from).unwrap();
        let new = Config::from_toml_str(to).map_err(|e| e.to_string())?;
        new.check_reload_from(&old).map_err(|e| e.to_string())
    }

    #[test]
    fn users_pools_and_a_new_empty_shard_reload() {
        let to = format!(
            "{}\n[[users]]\nname = \"new\"\npassword = \"x\"\n\n[[shards]]\nname = \"s2\"\n\
             primary = \"127.0.0.1:5434\"\nreplicas = [\"127.0.0.1:5435\"]\nslots = \"\"\n",
            BASE.replace(
                "[[shards]]\nname = \"s0\"",
                "[pool]\nsize = 3\n\n[[shards]]\nname = \"s0\""
            )
        );
        reload(BASE, &to).unwrap();
    }

    #[test]
    fn a_moved_slot_is_refused_naming_the_shard() {
        let to = BASE
            .replace("0-2047", "0-2046")
            .replace("2048-4095", "2047-4095");
        let msg = reload(BASE, &to).unwrap_err();
        assert!(
            msg.contains("shards[1].slots") && msg.contains("slot 2047"),
            "{msg}"
        );
    }

    #[test]
    fn with_a_catalog_the_files_slots_may_change_but_not_the_catalog() {
        let with = BASE.replacen("[[shards]]", "[catalog]\n\n[[shards]]", 1);
        let moved = with
            .replace("0-2047", "0-2046")
            .replace("2048-4095", "2047-4095");
        reload(&with, &moved).unwrap();
        let msg = reload(
            &with,
            &moved.replace("[catalog]", "[catalog]\npoll_interval_ms = 5"),
        )
        .unwrap_err();
        assert!(
            msg.contains("`catalog`") && msg.contains("restart"),
            "{msg}"
        );
        let msg = reload(BASE, &with).unwrap_err();
        assert!(msg.contains("`catalog`"), "{msg}");
    }

    #[test]
    fn restart_only_keys_are_named() {
        let msg = reload(BASE, &BASE.replace("6432", "6433")).unwrap_err();
        assert!(
            msg.contains("server.listen") && msg.contains("restart"),
            "{msg}"
        );
        let msg = reload(
            BASE,
            &format!("{BASE}\n[sharding]\nkey_column = \"tenant\"\n"),
        )
        .unwrap_err();
        assert!(msg.contains("`sharding`"), "{msg}");
        let msg = reload(BASE, &BASE.replace("\"s1\"", "\"other\"")).unwrap_err();
        assert!(msg.contains("shards[1].name"), "{msg}");
    }
}
