//! Config validation at load: every problem is reported with the key at fault, what is wrong
//! and what to do. Pure: looks only at the parsed values, never at the network.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{AuthMethod, BackendTlsMode, ClientTlsMode, Config};
use crate::sharding::{ShardMap, ShardingError};

/// Smallest `server.max_message_bytes` that leaves room for a startup packet and a query.
const MIN_MESSAGE_BYTES: usize = 1024;

/// A config that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config is not valid TOML: {0}")]
    Parse(String),
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl Config {
    /// Checks everything that can be checked without connecting anywhere; the first problem
    /// found is returned.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_users()?;
        self.validate_admin()?;
        self.validate_pool()?;
        self.validate_shards()?;
        self.try_shard_map()?;
        self.validate_catalog()?;
        self.validate_sharding()
    }

    fn validate_catalog(&self) -> Result<(), ConfigError> {
        let Some(catalog) = &self.catalog else {
            return Ok(());
        };
        at_least_one("catalog.poll_interval_ms", catalog.poll_interval_ms)?;
        // A router fences the moves it knows of after two polls and a second; the lease,
        // which fences every slot, cannot come before that.
        let least = catalog
            .poll_interval_ms
            .saturating_mul(2)
            .saturating_add(1_000);
        if let Some(lease) = catalog.lease_ms.filter(|&ms| ms < least) {
            return Err(invalid(
                "catalog.lease_ms",
                format!(
                    "is {lease}; it must be at least two poll intervals and a second ({least} \
                     with poll_interval_ms = {})",
                    catalog.poll_interval_ms
                ),
            ));
        }
        if let Some(url) = &catalog.url {
            url.parse::<tokio_postgres::Config>().map_err(|e| {
                invalid(
                    "catalog.url",
                    format!("is not a connection string libpq would accept: {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// The shard map the `[[shards]]` entries describe.
    ///
    /// Infallible for a config from [`Config::load`] or [`Config::from_toml_str`]: both run
    /// `validate`, which builds this same map through [`Config::try_shard_map`] and rejects the
    /// config if that fails. A `Config` deserialized by other means, or whose `shards` were
    /// changed after loading, must use [`Config::try_shard_map`] instead.
    pub fn shard_map(&self) -> ShardMap {
        self.try_shard_map()
            .expect("shard map was built when the config was validated at load")
    }

    /// The shard map the `[[shards]]` entries describe, or the error naming the key at fault.
    pub fn try_shard_map(&self) -> Result<ShardMap, ConfigError> {
        let specs: Vec<(String, Option<String>)> = self
            .shards
            .iter()
            .map(|s| (s.name.clone(), s.slots.clone()))
            .collect();
        ShardMap::new(&specs).map_err(|e| {
            let key = match (&e, e.shard_idx()) {
                (ShardingError::DuplicateShardName { second, .. }, _) => {
                    format!("shards[{second}].name")
                }
                (_, Some(i)) => format!("shards[{i}].slots"),
                (ShardingError::NoShards | ShardingError::TooManyShards { .. }, None) => {
                    "shards".to_string()
                }
                (_, None) => "shards[*].slots".to_string(),
            };
            invalid(key, e.to_string())
        })
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        check_host_port("server.listen", &server.listen, true)?;
        if let Some(metrics) = &self.metrics {
            check_host_port("metrics.listen", &metrics.listen, true)?;
        }
        if server.database.trim().is_empty() {
            return Err(invalid(
                "server.database",
                "is empty; set it to the database name clients connect to",
            ));
        }
        if server.max_message_bytes < MIN_MESSAGE_BYTES {
            return Err(invalid(
                "server.max_message_bytes",
                format!(
                    "is {}, below the minimum of {MIN_MESSAGE_BYTES}; raise it (the default is \
                     64 MiB)",
                    server.max_message_bytes
                ),
            ));
        }
        at_least_one(
            "server.max_client_connections",
            server.max_client_connections,
        )?;
        at_least_one("server.startup_timeout_ms", server.startup_timeout_ms)?;
        at_least_one("server.listen_backlog", u64::from(server.listen_backlog))?;
        self.validate_tls()
    }

    /// TLS settings that go together (the files themselves are read by `Config::client_tls` and `Config::server_tls`).
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        pair(
            "server.tls_cert",
            &server.tls_cert,
            "server.tls_key",
            &server.tls_key,
        )?;
        if server.tls_cert.is_none() && server.effective_tls_mode() != ClientTlsMode::Disable {
            return Err(invalid(
                "server.tls_mode",
                "allow and require need a certificate: set server.tls_cert and server.tls_key",
            ));
        }
        let backend = &self.backend_tls;
        pair(
            "backend_tls.cert",
            &backend.cert,
            "backend_tls.key",
            &backend.key,
        )?;
        let verifying = matches!(
            backend.mode,
            BackendTlsMode::VerifyCa | BackendTlsMode::VerifyFull
        );
        if verifying && backend.ca.is_none() {
            return Err(invalid(
                "backend_tls.ca",
                format!(
                    "is needed for backend_tls.mode = \"{}\": set it to the PEM file of the CA \
                     that signed the servers' certificates",
                    backend.mode.as_str()
                ),
            ));
        }
        Ok(())
    }

    fn validate_users(&self) -> Result<(), ConfigError> {
        if self.users.is_empty() {
            return Err(invalid(
                "users",
                "no users are configured; add a [[users]] entry with a name and a password",
            ));
        }
        let mut seen = HashMap::new();
        for (i, user) in self.users.iter().enumerate() {
            if user.name.is_empty() {
                return Err(invalid(
                    format!("users[{i}].name"),
                    "is empty; set it to the user name clients log in as",
                ));
            }
            if let Some(first) = seen.insert(user.name.as_str(), i) {
                return Err(invalid(
                    format!("users[{i}].name"),
                    format!(
                        "user {:?} is already defined as users[{first}]; remove one or rename it",
                        user.name
                    ),
                ));
            }
            if user.password.is_empty() && self.server.auth_method != AuthMethod::Trust {
                return Err(invalid(
                    format!("users[{i}].password"),
                    "is empty; set a password, or set server.auth_method = \"trust\" to let \
                     clients in without one",
                ));
            }
            if let Some(size) = user.pool_size {
                at_least_one(&format!("users[{i}].pool_size"), size)?;
            }
            if let Some(max) = user.max_client_connections {
                at_least_one(&format!("users[{i}].max_client_connections"), max)?;
            }
            if let Some(rate) = user.statements_per_second {
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(invalid(
                        format!("users[{i}].statements_per_second"),
                        format!("is {rate}; set a positive number, or remove it for no limit"),
                    ));
                }
            }
            if let Some(burst) = user.statement_burst {
                at_least_one(&format!("users[{i}].statement_burst"), burst as usize)?;
            }
        }
        Ok(())
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        let admin = &self.admin;
        let lists = [
            ("admin.users", &admin.users),
            ("admin.stats_users", &admin.stats_users),
        ];
        for (key, names) in lists {
            for (i, name) in names.iter().enumerate() {
                if name.is_empty() {
                    return Err(invalid(
                        format!("{key}[{i}]"),
                        "a user name must not be empty",
                    ));
                }
                if self.user(name).is_none() && admin.password.is_none() {
                    return Err(invalid(
                        format!("{key}[{i}]"),
                        format!(
                            "console user {name:?} is not in [[users]], so it has no password: \
                             add it to [[users]] or set [admin] password"
                        ),
                    ));
                }
            }
        }
        if admin.password.as_deref() == Some("") {
            return Err(invalid("admin.password", "must not be empty"));
        }
        if ["pgshard", "pgbouncer"].contains(&self.server.database.as_str()) {
            return Err(invalid(
                "server.database",
                format!(
                    "{:?} is the admin console's database name; serve another name",
                    self.server.database
                ),
            ));
        }
        Ok(())
    }

    fn validate_pool(&self) -> Result<(), ConfigError> {
        let pool = &self.pool;
        at_least_one("pool.size", pool.size)?;
        if pool.min_idle > pool.size {
            return Err(invalid(
                "pool.min_idle",
                format!(
                    "is {}, more than pool.size ({}); lower it to at most pool.size",
                    pool.min_idle, pool.size
                ),
            ));
        }
        at_least_one("pool.checkout_timeout_ms", pool.checkout_timeout_ms)
    }

    fn validate_shards(&self) -> Result<(), ConfigError> {
        if self.shards.is_empty() {
            return Err(invalid(
                "shards",
                "no shards are configured; add a [[shards]] entry with a name and a primary",
            ));
        }
        let mut seen = HashMap::new();
        for (i, shard) in self.shards.iter().enumerate() {
            if shard.name.trim().is_empty() {
                return Err(invalid(
                    format!("shards[{i}].name"),
                    "is empty; give the shard a name such as \"s0\"",
                ));
            }
            if let Some(first) = seen.insert(shard.name.as_str(), i) {
                return Err(invalid(
                    format!("shards[{i}].name"),
                    format!(
                        "shard {:?} is already defined as shards[{first}]; give each shard its \
                         own name",
                        shard.name
                    ),
                ));
            }
            check_host_port(&format!("shards[{i}].primary"), &shard.primary, false)?;
            for (j, replica) in shard.replicas.iter().enumerate() {
                check_host_port(&format!("shards[{i}].replicas[{j}]"), replica, false)?;
            }
            if shard
                .database
                .as_deref()
                .is_some_and(|d| d.trim().is_empty())
            {
                return Err(invalid(
                    format!("shards[{i}].database"),
                    "is empty; remove it to use server.database, or name the database",
                ));
            }
        }
        Ok(())
    }

    fn validate_sharding(&self) -> Result<(), ConfigError> {
        let sharding = &self.sharding;
        at_least_one(
            "sharding.replay_check_interval_ms",
            sharding.replay_check_interval_ms,
        )?;
        at_least_one("sharding.replay_check_gap_ms", sharding.replay_check_gap_ms)?;
        if sharding.key_column.trim().is_empty() {
            return Err(invalid(
                "sharding.key_column",
                "is empty; set it to the shard key column, e.g. \"user_id\"",
            ));
        }
        let mut seen = HashMap::new();
        for (i, table) in sharding.tables.iter().enumerate() {
            let key = format!("sharding.tables[{i}].name");
            if table.name.trim().is_empty() {
                return Err(invalid(key, "is empty; set it to the table's name"));
            }
            if let Some(first) = seen.insert(table.name.as_str(), i) {
                return Err(invalid(
                    key,
                    format!(
                        "table {:?} is already listed as sharding.tables[{first}]; remove one",
                        table.name
                    ),
                ));
            }
            if sharding.reference_tables.contains(&table.name) {
                return Err(invalid(
                    key,
                    format!(
                        "table {:?} is also in sharding.reference_tables; a table is either \
                         sharded or copied to every shard, so remove it from one list",
                        table.name
                    ),
                ));
            }
            if table
                .key_column
                .as_deref()
                .is_some_and(|c| c.trim().is_empty())
            {
                return Err(invalid(
                    format!("sharding.tables[{i}].key_column"),
                    "is empty; remove it to use sharding.key_column, or name the column",
                ));
            }
        }
        if let Some(name) = &sharding.default_shard {
            if !self.shards.iter().any(|s| &s.name == name) {
                let names: Vec<&str> = self.shards.iter().map(|s| s.name.as_str()).collect();
                return Err(invalid(
                    "sharding.default_shard",
                    format!(
                        "names shard {name:?}, which is not configured; use one of {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn at_least_one<T: PartialOrd + From<u8> + std::fmt::Display>(
    key: &str,
    value: T,
) -> Result<(), ConfigError> {
    if value < T::from(1) {
        return Err(invalid(key, format!("is {value}; it must be at least 1")));
    }
    Ok(())
}

/// Accepts `1.2.3.4:5432`, `[::1]:5432` and `db.example.com:5432`. Port 0 only if `allow_zero`
/// (a listen address may ask for any free port).
fn check_host_port(key: &str, value: &str, allow_zero: bool) -> Result<(), ConfigError> {
    let fail = |problem: &str| {
        invalid(
            key,
            format!("{value:?} is not host:port: {problem}; write it like 127.0.0.1:5432"),
        )
    };
    let port = match value.parse::<SocketAddr>() {
        Ok(addr) => addr.port(),
        Err(_) => {
            let Some((host, port)) = value.rsplit_once(':') else {
                return Err(fail("the port is missing"));
            };
            if host.is_empty() {
                return Err(fail("the host is missing"));
            }
            if host.contains(':') || host.starts_with('[') {
                return Err(fail(
                    "an IPv6 address must be in brackets, as in [::1]:5432",
                ));
            }
            let host_ok = host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
            if !host_ok {
                return Err(fail("the host has characters a host name cannot have"));
            }
            port.parse::<u16>()
                .map_err(|_| fail("the port is not a number from 1 to 65535"))?
        }
    };
    if port == 0 && !allow_zero {
        return Err(fail("port 0 cannot be connected to"));
    }
    Ok(())
}

/// Two keys set together or not at all.
fn pair<T>(a: &str, a_value: &Option<T>, b: &str, b_value: &Option<T>) -> Result<(), ConfigError> {
    match (a_value.is_some(), b_value.is_some()) {
        (true, false) => Err(invalid(b, format!("is missing: {a} is set, and needs it"))),
        (false, true) => Err(invalid(a, format!("is missing: {b} is set, and needs it"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example config from the issue: the shape outside tools rely on.
    const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:6432"
database = "app"
pool_mode = "transaction"
[pool]
size = 20
checkout_timeout_ms = 5000
[[users]]
name = "app"
password = "app"
[sharding]
key_column = "user_id"
key_type = "bigint"
[[sharding.tables]]
name = "users"
[[shards]]
name = "s0"
primary = "127.0.0.1:5432"
replicas = ["127.0.0.1:5433"]
"#;

    /// A second shard appended to [`EXAMPLE`].
    const S1: &str = "\n[[shards]]\nname = \"s1\"\nprimary = \"127.0.0.1:5434\"\n";

    /// Loads `text` and returns the error message, which must name `key`.
    fn error_naming(text: &str, key: &str) -> String {
        let err = Config::from_toml_str(text).expect_err("config should be rejected");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("`{key}`")),
            "expected key {key}: {msg}"
        );
        msg
    }

    fn example_with(from: &str, to: &str) -> String {
        assert!(EXAMPLE.contains(from), "{from:?} not in EXAMPLE");
        EXAMPLE.replacen(from, to, 1)
    }

    #[test]
    fn example_config_loads() {
        let config = Config::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(config.shard_map().ranges_of(0), vec![0..=4095]);
    }

    #[test]
    fn the_catalog_defaults_to_the_first_shard_as_the_first_user() {
        let config = Config::from_toml_str(EXAMPLE).unwrap();
        assert!(config.catalog.is_none());
        assert_eq!(
            config.catalog_url(),
            "host='127.0.0.1' port='5432' dbname='app' user='app' password='app' \
             application_name=pgshard-catalog"
        );
        assert_eq!(config.catalog_poll_interval().as_millis(), 1000);
        let text = example_with(
            "[[users]]\nname = \"app\"\npassword = \"app\"",
            "[[users]]\n\
             name = \"app\"\npassword = \"app\"\nserver_user = \"o'k\"\n\
             server_password = \"p\\\\w\"\n[catalog]\npoll_interval_ms = 250",
        );
        let config = Config::from_toml_str(&text).unwrap();
        let url = config.catalog_url();
        assert!(url.contains(r"user='o\'k' password='p\\w'"), "{url}");
        assert_eq!(config.catalog_poll_interval().as_millis(), 250);
        let parsed: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(parsed.get_user(), Some("o'k"));
        assert_eq!(parsed.get_password(), Some(&br"p\w"[..]));
        let given = format!("{EXAMPLE}\n[catalog]\nurl = \"postgres://u:p@db:6000/meta\"\n");
        let config = Config::from_toml_str(&given).unwrap();
        assert_eq!(config.catalog_url(), "postgres://u:p@db:6000/meta");
        error_naming(
            &format!("{EXAMPLE}\n[catalog]\nurl = \"host=x port=nope\"\n"),
            "catalog.url",
        );
        error_naming(
            &format!("{EXAMPLE}\n[catalog]\npoll_interval_ms = 0\n"),
            "catalog.poll_interval_ms",
        );
        let msg = error_naming(
            &format!("{EXAMPLE}\n[catalog]\npoll_interval_ms = 500\nlease_ms = 1999\n"),
            "catalog.lease_ms",
        );
        assert!(
            msg.contains("at least two poll intervals and a second (2000"),
            "{msg}"
        );
        let ok = format!("{EXAMPLE}\n[catalog]\npoll_interval_ms = 500\nlease_ms = 2000\n");
        let catalog = Config::from_toml_str(&ok).unwrap().catalog.unwrap();
        assert_eq!(catalog.lease(), std::time::Duration::from_millis(2000));
        let slow = format!("{EXAMPLE}\n[catalog]\npoll_interval_ms = 6000\n");
        let catalog = Config::from_toml_str(&slow).unwrap().catalog.unwrap();
        assert_eq!(catalog.lease(), std::time::Duration::from_millis(13_000));
    }

    #[test]
    fn two_shards_without_slots_split_evenly() {
        let config = Config::from_toml_str(&format!("{EXAMPLE}{S1}")).unwrap();
        assert_eq!(config.shard_map().ranges_of(1), vec![2048..=4095]);
    }

    #[test]
    fn listen_must_be_host_and_port() {
        let msg = error_naming(
            &example_with("127.0.0.1:6432", "localhost"),
            "server.listen",
        );
        assert!(msg.contains("the port is missing"), "{msg}");
        error_naming(
            &example_with("127.0.0.1:6432", "host:99999"),
            "server.listen",
        );
        error_naming(&example_with("127.0.0.1:6432", ":6432"), "server.listen");
    }

    #[test]
    fn metrics_is_optional_and_its_listen_is_checked() {
        assert!(Config::from_toml_str(EXAMPLE).unwrap().metrics.is_none());
        let with = |listen: &str| format!("{EXAMPLE}\n[metrics]\nlisten = \"{listen}\"\n");
        let config = Config::from_toml_str(&with("127.0.0.1:9930")).unwrap();
        assert_eq!(config.metrics.unwrap().listen, "127.0.0.1:9930");
        error_naming(&with("9930"), "metrics.listen");
        let unknown = Config::from_toml_str(&format!("{EXAMPLE}\n[metrics]\nport = 1\n"));
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `port`"));
    }

    #[test]
    fn listen_accepts_names_ipv6_and_port_zero() {
        for listen in ["localhost:6432", "[::1]:6432", "0.0.0.0:0"] {
            let text = example_with("127.0.0.1:6432", listen);
            assert!(Config::from_toml_str(&text).is_ok(), "{listen}");
        }
    }

    #[test]
    fn database_must_not_be_empty() {
        error_naming(
            &example_with("database = \"app\"", "database = \"\""),
            "server.database",
        );
    }

    #[test]
    fn at_least_one_user_is_required() {
        let text = example_with(
            "[[users]]\nname = \"app\"\npassword = \"app\"",
            "users = []",
        );
        error_naming(&text, "users");
    }

    #[test]
    fn console_users_need_a_password_and_the_console_names_are_reserved() {
        let admin = format!("{EXAMPLE}\n[admin]\nusers = [\"ops\"]\n");
        let msg = error_naming(&admin, "admin.users[0]");
        assert!(msg.contains("[admin] password"), "{msg}");
        let with_password = format!("{admin}password = \"secret\"\n");
        let config = Config::from_toml_str(&with_password).expect("valid");
        assert_eq!(config.admin.access("ops"), Some(true));
        assert_eq!(config.admin_password("ops"), Some("secret"));
        let app_admin = format!("{EXAMPLE}\n[admin]\nstats_users = [\"app\"]\n");
        let config = Config::from_toml_str(&app_admin).expect("valid");
        assert_eq!(config.admin.access("app"), Some(false));
        assert_eq!(
            config.admin_password("app"),
            Some("app"),
            "[[users]] password"
        );
        assert_eq!(config.admin_password("nobody"), None);
        let reserved = example_with("database = \"app\"", "database = \"pgbouncer\"");
        error_naming(&reserved, "server.database");
    }

    #[test]
    fn user_names_are_unique() {
        let text = format!("{EXAMPLE}\n[[users]]\nname = \"app\"\npassword = \"x\"\n");
        let msg = error_naming(&text, "users[1].name");
        assert!(msg.contains("already defined as users[0]"), "{msg}");
    }

    #[test]
    fn empty_password_needs_trust_auth() {
        let text = example_with("password = \"app\"", "password = \"\"");
        let msg = error_naming(&text, "users[0].password");
        assert!(msg.contains("auth_method = \"trust\""), "{msg}");
        let trusted = text.replacen("[pool]", "auth_method = \"trust\"\n[pool]", 1);
        assert!(Config::from_toml_str(&trusted).is_ok());
    }

    #[test]
    fn pool_size_must_be_positive() {
        error_naming(&example_with("size = 20", "size = 0"), "pool.size");
    }

    #[test]
    fn min_idle_cannot_exceed_pool_size() {
        let msg = error_naming(
            &example_with("size = 20", "size = 2\nmin_idle = 3"),
            "pool.min_idle",
        );
        assert!(msg.contains("more than pool.size (2)"), "{msg}");
    }

    #[test]
    fn checkout_timeout_must_be_positive() {
        let text = example_with("checkout_timeout_ms = 5000", "checkout_timeout_ms = 0");
        error_naming(&text, "pool.checkout_timeout_ms");
    }

    #[test]
    fn user_pool_size_must_be_positive() {
        let text = example_with("password = \"app\"", "password = \"app\"\npool_size = 0");
        error_naming(&text, "users[0].pool_size");
    }

    #[test]
    fn at_least_one_shard_is_required() {
        let cut = &EXAMPLE[..EXAMPLE.find("[[shards]]").unwrap()];
        let msg = Config::from_toml_str(&format!("shards = []\n{cut}"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`shards`") && msg.contains("add a [[shards]] entry"),
            "{msg}"
        );
    }

    #[test]
    fn shard_names_are_unique() {
        let text = format!("{EXAMPLE}{}", S1.replace("s1", "s0"));
        error_naming(&text, "shards[1].name");
    }

    #[test]
    fn primary_must_be_host_and_port() {
        let text = format!("{EXAMPLE}{}", S1.replace("127.0.0.1:5434", "127.0.0.1"));
        error_naming(&text, "shards[1].primary");
        let text = format!("{EXAMPLE}{}", S1.replace("127.0.0.1:5434", "db:0"));
        error_naming(&text, "shards[1].primary");
    }

    #[test]
    fn replicas_must_be_host_and_port() {
        let text = example_with("[\"127.0.0.1:5433\"]", "[\"127.0.0.1:5433\", \"::1:5433\"]");
        let msg = error_naming(&text, "shards[0].replicas[1]");
        assert!(msg.contains("brackets"), "{msg}");
    }

    #[test]
    fn sharded_table_names_are_unique() {
        let text = format!("{EXAMPLE}\n[[sharding.tables]]\nname = \"users\"\n");
        error_naming(&text, "sharding.tables[1].name");
    }

    #[test]
    fn a_table_cannot_be_both_sharded_and_reference() {
        let text = example_with(
            "key_type = \"bigint\"",
            "key_type = \"bigint\"\nreference_tables = [\"users\"]",
        );
        let msg = error_naming(&text, "sharding.tables[0].name");
        assert!(msg.contains("reference_tables"), "{msg}");
    }

    #[test]
    fn default_shard_must_exist() {
        let text = example_with(
            "key_type = \"bigint\"",
            "key_type = \"bigint\"\ndefault_shard = \"s9\"",
        );
        let msg = error_naming(&text, "sharding.default_shard");
        assert!(
            msg.contains("\"s9\"") && msg.contains("use one of s0"),
            "{msg}"
        );
    }

    #[test]
    fn slot_gaps_name_the_slots() {
        let text = format!(
            "{}{}",
            example_with("replicas", "slots = \"0-99\"\nreplicas"),
            S1.replace("5434\"", "5434\"\nslots = \"300-4095\"")
        );
        let msg = error_naming(&text, "shards[*].slots");
        assert!(msg.contains("slots 100-299 are owned by no shard"), "{msg}");
    }

    #[test]
    fn slot_overlaps_name_the_shard_and_slots() {
        let text = format!(
            "{}{}",
            example_with("replicas", "slots = \"0-5\"\nreplicas"),
            S1.replace("5434\"", "5434\"\nslots = \"5-4095\"")
        );
        let msg = error_naming(&text, "shards[1].slots");
        assert!(msg.contains("slot 5 is owned by both s0 and s1"), "{msg}");
    }

    #[test]
    fn bad_slot_specs_name_the_shard() {
        let text = example_with("replicas", "slots = \"0-4096\"\nreplicas");
        error_naming(&text, "shards[0].slots");
    }

    #[test]
    fn slots_on_some_shards_only_is_an_error() {
        let text = format!(
            "{}{S1}",
            example_with("replicas", "slots = \"0-4095\"\nreplicas")
        );
        error_naming(&text, "shards[1].slots");
    }

    #[test]
    fn max_message_bytes_has_a_floor() {
        let text = example_with(
            "database = \"app\"",
            "database = \"app\"\nmax_message_bytes = 100",
        );
        error_naming(&text, "server.max_message_bytes");
    }
}
