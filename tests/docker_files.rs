//! The files in `docker/` that no test here can run (there is no Docker engine): parsed and
//! checked against each other and against pgshard itself. The compose file runs pgshard, two
//! shards each with a streaming replica, Prometheus and Grafana; Prometheus scrapes the port
//! pgshard's compose config serves metrics on; the Grafana dashboard queries only metrics pgshard
//! exports. Reads files only; starts nothing.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use pgshard::config::Config;
use pgshard::metrics::{Kind, METRICS};
use yaml_rust2::{Yaml, YamlLoader};

fn docker() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker")
}

fn read(path: &str) -> String {
    let path = docker().join(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(path: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("docker/{path} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "docker/{path} holds one document");
    docs.remove(0)
}

fn compose() -> Yaml {
    yaml("docker-compose.yml")
}

/// `host:port` split, the port parsed.
fn host_port(addr: &str) -> (&str, u16) {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    (host, port.parse().expect("a port number"))
}

/// A service's key, or the one it merges from its `<<` anchor.
fn service_key<'a>(service: &'a Yaml, key: &str) -> &'a Yaml {
    match &service[key] {
        Yaml::BadValue => &service["<<"][key],
        value => value,
    }
}

/// The pgshard config the compose file mounts, parsed by pgshard itself.
fn compose_pgshard_config() -> Config {
    Config::from_toml_str(&read("pgshard.toml"))
        .unwrap_or_else(|e| panic!("docker/pgshard.toml is not a valid pgshard config: {e}"))
}

#[test]
fn compose_runs_pgshard_two_shards_with_replicas_prometheus_and_grafana() {
    let compose = compose();
    let services = compose["services"].as_hash().expect("a services map");
    let names: BTreeSet<&str> = services.keys().filter_map(Yaml::as_str).collect();
    for name in [
        "pgshard",
        "shard0-primary",
        "shard0-replica",
        "shard1-primary",
        "shard1-replica",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(name), "no service {name} in {names:?}");
    }
    let services = &compose["services"];
    for shard in ["shard0", "shard1"] {
        for role in ["primary", "replica"] {
            let service = &services[format!("{shard}-{role}").as_str()];
            let image = service_key(service, "image").as_str().unwrap_or_default();
            assert!(
                image.starts_with("postgres:"),
                "{shard}-{role} runs {image}"
            );
        }
        let replica = &services[format!("{shard}-replica").as_str()];
        assert_eq!(
            replica["environment"]["PRIMARY_HOST"].as_str(),
            Some(format!("{shard}-primary").as_str())
        );
    }
    assert!(read("postgres/replica-entrypoint.sh").contains("pg_basebackup"));
    assert!(read("postgres/init-primary.sh").contains("REPLICATION"));
    assert_eq!(
        services["pgshard"]["build"]["dockerfile"].as_str(),
        Some("docker/Dockerfile")
    );
    // Every file a service mounts from this directory exists.
    for (name, service) in services.as_hash().expect("services") {
        let volumes = service_key(service, "volumes")
            .as_vec()
            .cloned()
            .unwrap_or_default();
        for volume in volumes {
            let volume = volume.as_str().expect("a short volume syntax");
            if let Some(local) = volume.strip_prefix("./") {
                let local = local.split(':').next().unwrap_or_default();
                assert!(
                    docker().join(local).exists(),
                    "service {name:?} mounts docker/{local}, which does not exist"
                );
            }
        }
    }
}

#[test]
fn the_compose_pgshard_config_points_at_the_compose_services() {
    let config = compose_pgshard_config();
    let services = compose();
    let services = &services["services"];
    assert_eq!(config.shards.len(), 2);
    for shard in &config.shards {
        let servers = std::iter::once(&shard.primary).chain(&shard.replicas);
        for server in servers {
            let (host, _) = host_port(server);
            assert!(
                !services[host].is_badvalue(),
                "shard {} names {host}, no compose service",
                shard.name
            );
        }
        assert_eq!(
            shard.replicas.len(),
            1,
            "shard {} has its replica",
            shard.name
        );
    }
    let (_, port) = host_port(&config.server.listen);
    let published = services["pgshard"]["ports"]
        .as_vec()
        .expect("pgshard ports");
    assert!(published
        .iter()
        .any(|p| p.as_str() == Some(&format!("{port}:{port}"))));
}

#[test]
fn prometheus_scrapes_the_port_pgshard_serves_metrics_on() {
    let config = compose_pgshard_config();
    let metrics = config.metrics.expect("docker/pgshard.toml has [metrics]");
    let (_, port) = host_port(&metrics.listen);
    let prometheus = yaml("prometheus.yml");
    let jobs = prometheus["scrape_configs"]
        .as_vec()
        .expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|j| j["job_name"].as_str() == Some("pgshard"))
        .expect("a pgshard job");
    let path = job["metrics_path"].as_str().unwrap_or("/metrics");
    assert_eq!(path, "/metrics");
    let targets: Vec<&str> = job["static_configs"][0]["targets"]
        .as_vec()
        .expect("targets")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(targets, [format!("pgshard:{port}")]);
    let compose = compose();
    let published = compose["services"]["pgshard"]["ports"]
        .as_vec()
        .expect("pgshard ports");
    assert!(published
        .iter()
        .any(|p| p.as_str() == Some(&format!("{port}:{port}"))));
    // The compose file mounts this file where its command reads it.
    let prometheus = &compose["services"]["prometheus"];
    let volumes = prometheus["volumes"].as_vec().expect("prometheus volumes");
    assert!(volumes
        .iter()
        .any(|v| v.as_str() == Some("./prometheus.yml:/etc/prometheus/prometheus.yml:ro")));
}

#[test]
fn grafana_is_provisioned_with_the_prometheus_datasource_and_the_dashboard() {
    let datasources = yaml("grafana/provisioning/datasources/prometheus.yml");
    let source = &datasources["datasources"][0];
    assert_eq!(source["type"].as_str(), Some("prometheus"));
    assert_eq!(source["uid"].as_str(), Some("prometheus"));
    assert_eq!(source["url"].as_str(), Some("http://prometheus:9090"));
    let providers = yaml("grafana/provisioning/dashboards/pgshard.yml");
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("a dashboard path");
    let compose = compose();
    let volumes = compose["services"]["grafana"]["volumes"]
        .as_vec()
        .expect("grafana volumes");
    let mounted = format!("./grafana/dashboards:{path}:ro");
    assert!(
        volumes.iter().any(|v| v.as_str() == Some(&mounted)),
        "{mounted}"
    );
}

/// Every `pgshard_*` name in an expression, histogram series suffixes taken off.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("pgshard_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

fn exported(name: &str) -> bool {
    METRICS.iter().any(|m| {
        m.name == name
            || (m.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(m.name)))
    })
}

#[test]
fn the_dashboard_queries_only_metrics_pgshard_exports() {
    let text = read("grafana/dashboards/pgshard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert_eq!(dashboard["uid"], "pgshard");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut used = BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("each panel has targets");
        assert!(
            !targets.is_empty(),
            "panel {} queries nothing",
            panel["title"]
        );
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "prometheus");
            let expr = target["expr"].as_str().expect("a PromQL expression");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} uses no pgshard metric");
            for name in names {
                assert!(exported(&name), "{expr}: pgshard exports no {name}");
                used.insert(name);
            }
        }
    }
    // The dashboard shows every metric pgshard exports.
    for m in METRICS {
        assert!(
            used.iter().any(|u| u.starts_with(m.name)),
            "the dashboard does not show {}",
            m.name
        );
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names("sum by (le) (rate(pgshard_a_bucket[5m])) / pgshard_b"),
        ["pgshard_a_bucket", "pgshard_b"]
    );
    assert!(exported("pgshard_query_duration_seconds_bucket"));
    assert!(!exported("pgshard_statements_total_bucket"));
    assert!(!exported("pgshard_nothing"));
}

#[test]
fn debians_promtool_accepts_the_prometheus_config() {
    let promtool = Path::new("/usr/bin/promtool");
    assert!(
        promtool.exists(),
        "Debian's prometheus is not installed: apt-get install prometheus (.ci/run does)"
    );
    let out = std::process::Command::new(promtool)
        .args(["check", "config"])
        .arg(docker().join("prometheus.yml"))
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
