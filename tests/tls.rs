//! TLS on both sides of pgshard, against a PostgreSQL cluster started with `ssl = on` and a CA
//! made here: real clients (tokio-postgres, psql, psycopg, asyncpg, pgJDBC, node-postgres)
//! connect with `sslmode=verify-full`; `require` refuses plain clients; a TLS client's cancel
//! key works from a plain connection; `[backend_tls] verify-full` reaches the TLS server and
//! fails clearly against the wrong CA; bad TLS files fail config load naming the key.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pgshard::config::Config;
use pgshard::localpg::{ClusterOptions, ClusterSsl, LocalCluster};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use support::{start_proxy, Proxy};
use tokio::process::Command;
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Longest a client program may run before the test calls it hung.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// The test PKI: a CA, a certificate it signed for `127.0.0.1` only (used by the PostgreSQL
/// cluster and by pgshard; `localhost` is not in it), a client certificate for user `app` it
/// signed too, and a second CA that signed nothing here.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    fn wrong_ca(&self) -> PathBuf {
        self.dir.path().join("wrong-ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }
    fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }
}

static PKI: OnceLock<Pki> = OnceLock::new();

fn pki() -> &'static Pki {
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a directory for the test PKI");
        let (ca, ca_key) = make_ca("pgshard test CA");
        let (wrong_ca, _) = make_ca("some other CA");
        let key = KeyPair::generate().expect("a server key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".into()])
            .expect("server certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("signing the server certificate");
        let client_key = KeyPair::generate().expect("a client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "app");
        let client = params
            .signed_by(&client_key, &ca, &ca_key)
            .expect("signing the client certificate");
        let pki = Pki {
            dir,
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(pki.client_cert(), client.pem()).unwrap();
        std::fs::write(pki.client_key(), client_key.serialize_pem()).unwrap();
        std::fs::write(pki.ca(), &pki.ca_pem).unwrap();
        std::fs::write(pki.wrong_ca(), wrong_ca.pem()).unwrap();
        std::fs::write(pki.cert(), &pki.cert_pem).unwrap();
        std::fs::write(pki.key(), &pki.key_pem).unwrap();
        pki
    })
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-signing the CA");
    (cert, key)
}

static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();

/// A primary with `ssl = on` (the PKI's server certificate), role and database `app`, and a
/// database `certs` that `app` logs in to with its client certificate only.
fn tls_cluster() -> &'static LocalCluster {
    CLUSTER.get_or_init(|| {
        let pki = pki();
        let opts = ClusterOptions {
            replicas: 0,
            users: vec![("app".into(), "app".into())],
            databases: vec![("app".into(), "app".into()), ("certs".into(), "app".into())],
            ssl: Some(ClusterSsl {
                cert: pki.cert_pem.clone(),
                key: pki.key_pem.clone(),
                client_ca: Some(pki.ca_pem.clone()),
                hba_first: vec![
                    "hostssl certs app 127.0.0.1/32 cert".into(),
                    "host certs all all reject".into(),
                ],
            }),
            ..ClusterOptions::default()
        };
        let cluster = LocalCluster::start(&opts).expect("starting the ssl = on cluster");
        // SAFETY: registering a plain `extern "C" fn()` with no captured state.
        let registered = unsafe { libc::atexit(stop_cluster_at_exit) };
        assert_eq!(registered, 0, "atexit registration failed");
        cluster
    })
}

extern "C" fn stop_cluster_at_exit() {
    if let Some(cluster) = CLUSTER.get() {
        cluster.stop_shared();
    }
}

/// A config for the TLS cluster: clients under `server.tls_mode = client_mode` with the PKI's
/// certificate, servers under `[backend_tls]` written as `backend_tls` (TOML lines).
fn config(client_mode: &str, backend_tls: &str) -> String {
    let pki = pki();
    format!(
        r#"[server]
listen = "127.0.0.1:0"
database = "app"
tls_cert = "{cert}"
tls_key = "{key}"
tls_mode = "{client_mode}"

[pool]
size = 4
checkout_timeout_ms = 5000

[[users]]
name = "app"
password = "app"

[backend_tls]
{backend_tls}

[[shards]]
name = "s0"
primary = "{primary}"
"#,
        cert = pki.cert().display(),
        key = pki.key().display(),
        primary = tls_cluster().primary_addr(),
    )
}

/// `[backend_tls]` lines checking the servers' certificates and names against `ca`.
fn verify_full(ca: &Path) -> String {
    format!("mode = \"verify-full\"\nca = \"{}\"", ca.display())
}

/// The proxy most tests use: TLS required of clients, servers verified against the right CA.
async fn strict_proxy() -> Proxy {
    start_proxy(&config("require", &verify_full(&pki().ca()))).await
}

/// tokio-postgres with rustls trusting `ca` only: `sslmode=require` and rustls's checks of
/// chain and name make it verify-full.
fn tls_connector(ca: &Path) -> MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("reading the CA") {
        roots.add(cert.expect("a CA certificate")).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

async fn connect_tls(proxy: &Proxy) -> tokio_postgres::Client {
    connect_tls_with(proxy, "require").await
}

async fn connect_tls_with(proxy: &Proxy, sslmode: &str) -> tokio_postgres::Client {
    let url = format!("{}?sslmode={sslmode}", proxy.url("app", "app"));
    let (client, connection) = tokio_postgres::connect(&url, tls_connector(&pki().ca()))
        .await
        .expect("connecting through the proxy with TLS");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("client connection ended with an error: {e}");
        }
    });
    client
}

/// Whether the server connection serving `client` is encrypted, as the server sees it.
async fn server_side_ssl(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("reading pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn tokio_postgres_over_tls_reaches_the_server_over_tls() {
    let proxy = strict_proxy().await;
    let client = connect_tls(&proxy).await;
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    // Messages larger than a TLS record (16 KiB) and than pgshard's read buffers, both ways.
    let big = "x".repeat(300_000);
    let row = client
        .query_one("SELECT length($1::text), repeat('y', 500000)", &[&big])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 300_000);
    assert_eq!(row.get::<_, String>(1), "y".repeat(500_000));
    assert!(
        server_side_ssl(&client).await,
        "pgshard's server connection uses TLS"
    );
}

/// pgshard's own connections to the live shard map's catalog follow `[backend_tls]` too: the
/// watcher's LISTEN connection, which stays open, is encrypted as the server sees it.
#[tokio::test]
async fn the_catalog_connections_follow_backend_tls() {
    let text = format!(
        "{}\n[catalog]\npoll_interval_ms = 200\n",
        config("require", &verify_full(&pki().ca()))
    );
    let proxy = start_proxy(&text).await;
    let client = connect_tls(&proxy).await;
    let started = std::time::Instant::now();
    loop {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'pgshard-catalog'",
                &[],
            )
            .await
            .unwrap();
        let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
        if all > 0 {
            assert_eq!(encrypted, all, "a catalog connection without TLS");
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the catalog watcher never connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn require_mode_refuses_a_plain_client_with_28000() {
    let proxy = strict_proxy().await;
    let err = tokio_postgres::connect(&proxy.url("app", "app"), NoTls)
        .await
        .err()
        .expect("a plain client is refused");
    let db = err.as_db_error().expect("an ErrorResponse from pgshard");
    assert_eq!(db.code().code(), "28000");
    assert!(
        db.message().contains("sslmode=require"),
        "the message says what to do: {}",
        db.message()
    );
}

#[tokio::test]
async fn allow_mode_serves_plain_and_tls_clients() {
    let proxy = start_proxy(&config("allow", &verify_full(&pki().ca()))).await;
    let plain = proxy.connect().await;
    assert_eq!(
        plain
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    let tls = connect_tls(&proxy).await;
    assert_eq!(
        tls.query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

#[tokio::test]
async fn the_cancel_key_of_a_tls_client_works_from_a_plain_connection() {
    let proxy = strict_proxy().await;
    // `prefer`: TLS for the session (the proxy requires it), and tokio-postgres then sends the
    // CancelRequest below on a plain connection (with `require` it would insist on TLS).
    let client = connect_tls_with(&proxy, "prefer").await;
    let token = client.cancel_token();
    let marker = "tls_cancel_marker";
    let sleeping = tokio::spawn(async move {
        client
            .simple_query(&format!("SELECT pg_sleep(60) /* {marker} */"))
            .await
    });
    // Wait until the server runs the statement (seen from a direct connection).
    let direct = support::connect_direct(tls_cluster().primary_port()).await;
    let watch = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{marker} */'"
    );
    loop {
        let running: i64 = direct.query_one(&watch, &[]).await.unwrap().get(0);
        if running > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // tokio-postgres sends the CancelRequest on a new, plain connection.
    token.cancel_query(NoTls).await.expect("sending the cancel");
    let err = tokio::time::timeout(HANG_GUARD, sleeping)
        .await
        .expect("the statement ends")
        .unwrap()
        .expect_err("the statement was cancelled");
    let code = err.as_db_error().map(|e| e.code().code().to_string());
    assert_eq!(code.as_deref(), Some("57014"), "{err}");
}

#[tokio::test]
async fn backend_verify_full_against_the_wrong_ca_fails_with_a_clear_error() {
    let proxy = start_proxy(&config("allow", &verify_full(&pki().wrong_ca()))).await;
    // The login itself needs a server connection (for the server's parameters).
    let err = tokio_postgres::connect(&proxy.url("app", "app"), NoTls)
        .await
        .err()
        .expect("no server connection can be opened");
    let db = err.as_db_error().expect("an ErrorResponse from pgshard");
    assert_eq!(db.code().code(), "08006", "{}", db.message());
    assert!(
        db.message().contains("TLS") && db.message().contains("backend_tls.ca"),
        "the message names TLS and the key to check: {}",
        db.message()
    );
}

#[tokio::test]
async fn backend_prefer_without_a_ca_encrypts() {
    let proxy = start_proxy(&config("allow", "mode = \"prefer\"")).await;
    let client = proxy.connect().await;
    assert!(server_side_ssl(&client).await);
}

#[tokio::test]
async fn backend_verify_ca_ignores_the_host_name_and_verify_full_checks_it() {
    // The server's certificate names 127.0.0.1; `localhost:PORT` reaches the same server.
    let by_name = format!("localhost:{}", tls_cluster().primary_port());
    let ca = pki().ca();
    let verify_ca = config(
        "allow",
        &format!("mode = \"verify-ca\"\nca = \"{}\"", ca.display()),
    )
    .replace(&tls_cluster().primary_addr(), &by_name);
    let proxy = start_proxy(&verify_ca).await;
    assert!(server_side_ssl(&proxy.connect().await).await);
    let verify_full =
        config("allow", &verify_full(&ca)).replace(&tls_cluster().primary_addr(), &by_name);
    let proxy = start_proxy(&verify_full).await;
    let err = tokio_postgres::connect(&proxy.url("app", "app"), NoTls)
        .await
        .err()
        .expect("verify-full refuses a certificate for another name");
    let message = err
        .as_db_error()
        .expect("an ErrorResponse")
        .message()
        .to_string();
    assert!(message.contains("not valid for name"), "{message}");
}

#[tokio::test]
async fn backend_client_certificate_logs_in_where_the_server_asks_for_one() {
    let pki = pki();
    let on_certs = |backend: &str| format!("{}database = \"certs\"\n", config("allow", backend));
    let with_cert = format!(
        "{}\ncert = \"{}\"\nkey = \"{}\"",
        verify_full(&pki.ca()),
        pki.client_cert().display(),
        pki.client_key().display()
    );
    let proxy = start_proxy(&on_certs(&with_cert)).await;
    let client = proxy.connect().await;
    let row = client
        .query_one(
            "SELECT current_database(), client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "certs");
    assert_eq!(row.get::<_, String>(1), "/CN=app");
    // The same without the certificate: the server refuses pgshard's login.
    let proxy = start_proxy(&on_certs(&verify_full(&pki.ca()))).await;
    let err = tokio_postgres::connect(&proxy.url("app", "app"), NoTls)
        .await
        .err()
        .expect("no login without the client certificate");
    let message = err
        .as_db_error()
        .expect("an ErrorResponse")
        .message()
        .to_string();
    assert!(message.contains("certificate"), "{message}");
}

#[test]
fn bad_tls_files_fail_config_load_naming_the_key() {
    let pki = pki();
    let base = config("require", &verify_full(&pki.ca()));
    let cert = pki.cert().display().to_string();
    let key = pki.key().display().to_string();
    let ca = pki.ca().display().to_string();
    let cases = [
        (cert.as_str(), "/nonexistent/server.pem", "server.tls_cert"),
        (key.as_str(), "/nonexistent/server.key", "server.tls_key"),
        // A certificate where the key should be.
        (key.as_str(), cert.as_str(), "server.tls_key"),
        (ca.as_str(), "/nonexistent/ca.pem", "backend_tls.ca"),
        // A key where the CA should be: no certificate in it.
        (ca.as_str(), key.as_str(), "backend_tls.ca"),
    ];
    for (old, new, named) in cases {
        let text = base.replacen(&format!("\"{old}\""), &format!("\"{new}\""), 1);
        assert_ne!(text, base);
        let err = Config::from_toml_str(&text)
            .err()
            .unwrap_or_else(|| panic!("{new} as {named} must be refused"))
            .to_string();
        assert!(err.contains(named), "{named}: {err}");
    }
    Config::from_toml_str(&base).expect("the good files load");
}

#[test]
fn tls_settings_that_do_not_go_together_are_refused() {
    let base = config("require", &verify_full(&pki().ca()));
    let no_cert = base
        .lines()
        .filter(|l| !l.starts_with("tls_cert") && !l.starts_with("tls_key"))
        .collect::<Vec<_>>()
        .join("\n");
    let err = Config::from_toml_str(&no_cert).err().unwrap().to_string();
    assert!(err.contains("server.tls_mode"), "{err}");
    let no_ca = base.replace(&verify_full(&pki().ca()), "mode = \"verify-ca\"");
    let err = Config::from_toml_str(&no_ca).err().unwrap().to_string();
    assert!(err.contains("backend_tls.ca"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Other clients, with sslmode=verify-full against the test CA

async fn run(command: &mut Command) -> Output {
    let out = tokio::time::timeout(HANG_GUARD, command.kill_on_drop(true).output())
        .await
        .expect("the client finishes")
        .expect("the client runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(
        out.status.success(),
        "client failed ({}):\n{report}",
        out.status
    );
    out
}

fn clients_dir() -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "tests", "clients"]
        .iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_connects_with_verify_full() {
    let proxy = strict_proxy().await;
    let conninfo = format!(
        "host=127.0.0.1 port={} dbname=app user=app sslmode=verify-full sslrootcert={}",
        proxy.port(),
        pki().ca().display()
    );
    let out = run(Command::new("psql")
        .arg(&conninfo)
        .args(["-X", "-At", "-c", "\\conninfo", "-c", "SELECT 40 + 2"])
        .env("PGPASSWORD", "app"))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SSL connection"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "42"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_asyncpg_connect_with_verify_full() {
    let proxy = strict_proxy().await;
    run(Command::new("python3")
        .arg(clients_dir().join("tls_drivers.py"))
        .arg(proxy.port().to_string())
        .arg(pki().ca()))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_connects_with_verify_full() {
    let proxy = strict_proxy().await;
    run(Command::new("java")
        .args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(clients_dir().join("JdbcTls.java"))
        .arg(proxy.port().to_string())
        .arg(pki().ca()))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_connects_with_verify_full() {
    let proxy = strict_proxy().await;
    let dir = clients_dir().join("node");
    assert!(
        dir.join("node_modules/pg").exists(),
        "node-postgres is not installed: run npm ci --prefix tests/clients/node (.ci/run does)"
    );
    run(Command::new("node")
        .arg(dir.join("tls.js"))
        .arg(proxy.port().to_string())
        .arg(pki().ca()))
    .await;
}

#[test]
fn pgshard_check_names_the_tls_key_of_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = config("require", &verify_full(&pki().ca()));
    let path = dir.path().join("good.toml");
    std::fs::write(&path, &good).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("tls        clients require"), "{stdout}");
    let bad = good.replace(&pki().key().display().to_string(), "/nonexistent/key.pem");
    std::fs::write(&path, bad).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("server.tls_key"), "{stderr}");
}
