//! The proxy's protocol surface against the real cluster: simple and extended queries, errors and
//! transaction status, client authentication, COPY, cancel requests, startup packets, and what
//! happens to malformed input. Each test starts its own proxy in front of the shared cluster.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, TryStreamExt};
use support::{base_config, base_config_with, cluster, connect_direct, start_proxy, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Bounds every wait on the proxy, so that a hang fails the test instead of stalling the suite.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// A proxy that lets configured users in without a password (for the hand-made protocol clients).
async fn trust_proxy(pool_size: usize) -> Proxy {
    start_proxy(&base_config_with(&[
        (
            "pool_mode = \"transaction\"",
            "pool_mode = \"transaction\"\nauth_method = \"trust\"",
        ),
        ("size = 4", &format!("size = {pool_size}")),
    ]))
    .await
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The SQLSTATE of a failed call, for assertions.
fn sqlstate<T: std::fmt::Debug>(result: Result<T, tokio_postgres::Error>) -> String {
    let err = result.expect_err("the call must fail");
    match err.code() {
        Some(code) => code.code().to_string(),
        None => panic!("error without SQLSTATE: {err:?}"),
    }
}

/// The rows of a simple query, as text.
fn rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

async fn count_on_primary(table: &str) -> i64 {
    let primary = connect_direct(cluster().primary_port()).await;
    primary
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

// ---------------------------------------------------------------------------------------------
// Queries and transaction status

#[tokio::test]
async fn simple_query_returns_rows() {
    let proxy = start_proxy(&base_config(cluster())).await;
    let client = proxy.connect().await;
    let messages = client.simple_query("SELECT 1 + 1, 'two'").await.unwrap();
    assert_eq!(
        rows(&messages),
        vec![vec![Some("2".into()), Some("two".into())]]
    );
}

#[tokio::test]
async fn extended_query_binds_parameters() {
    let proxy = start_proxy(&base_config(cluster())).await;
    let client = proxy.connect().await;
    let row = client
        .query_one("SELECT $1::int8 * 2, $2::text || '!'", &[&21i64, &"hi"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");
}

#[tokio::test]
async fn multi_statement_simple_query_returns_every_result() {
    let proxy = start_proxy(&base_config(cluster())).await;
    let client = proxy.connect().await;
    let messages = client
        .simple_query(
            "CREATE TABLE proto_multi (id int); INSERT INTO proto_multi VALUES (1), (2);
             SELECT count(*) FROM proto_multi; SELECT 'last'",
        )
        .await
        .unwrap();
    let completions: Vec<u64> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(completions, vec![0, 2, 1, 1], "CREATE, INSERT, two SELECTs");
    assert_eq!(
        rows(&messages),
        vec![vec![Some("2".into())], vec![Some("last".into())]]
    );
}

#[tokio::test]
async fn empty_query_is_answered_and_the_client_goes_on() {
    let proxy = start_proxy(&base_config(cluster())).await;
    let client = proxy.connect().await;
    let messages = client.simple_query("").await.unwrap();
    assert!(rows(&messages).is_empty());
    client.batch_execute(" ; ").await.unwrap();
    let row = client.query_one("SELECT 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
}

#[tokio::test]
async fn error_in_transaction_aborts_it_until_rollback() {
    let proxy = start_proxy(&base_config(cluster())).await;
    let client = proxy.connect().await;
    client
        .batch_execute("CREATE TABLE proto_aborted (id int)")
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO proto_aborted VALUES (1)")
        .await
        .unwrap();
    assert_eq!(
        sqlstate(
            client
                .batch_execute("SELECT * FROM proto_no_such_table")
                .await
        ),
        "42P01"
    );
    // The server now reports a failed transaction block: everything but ROLLBACK is refused.
    assert_eq!(sqlstate(client.query("SELECT 1", &[]).await), "25P02");
    assert_eq!(sqlstate(client.simple_query("SELECT 1").await), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    let row = client
        .query_one("SELECT count(*) FROM proto_aborted", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "the insert was rolled back");
    // Back to no transaction: each statement gets its own transaction again.
    let messages = client
        .simple_query("SELECT now() = statement_timestamp()")
        .await
        .unwrap();
    assert_eq!(rows(&messages), vec![vec![Some("t".into())]]);
}

#[tokio::test]
async fn large_values_pass_both_ways() {
    let proxy = start_proxy(&base_config(cluster())).await;
    let client = proxy.connect().await;
    client
        .batch_execute("CREATE TABLE proto_large (body text)")
        .await
        .unwrap();
    let body: String = (0..8 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    client
        .execute("INSERT INTO proto_large VALUES ($1)", &[&body])
        .await
        .unwrap();
    let row = client
        .query_one("SELECT body FROM proto_large", &[])
        .await
        .unwrap();
    assert!(
        row.get::<_, String>(0) == body,
        "the 8 MiB value came back unchanged"
    );
}

#[tokio::test]
async fn large_result_set_arrives_complete() {
    let proxy = start_proxy(&base_config(cluster())).await;
    let client = proxy.connect().await;
    let sql = "SELECT g, repeat('x', 1000) FROM generate_series(1, 50000) g";
    let rows = client.query(sql, &[]).await.unwrap();
    assert_eq!(rows.len(), 50_000);
    assert_eq!(rows[49_999].get::<_, i32>(0), 50_000);
    assert!(rows.iter().all(|r| r.get::<_, &str>(1).len() == 1000));
}

// ---------------------------------------------------------------------------------------------
// Client authentication

#[tokio::test]
async fn scram_login_succeeds_with_the_right_password() {
    let proxy = start_proxy(&base_config(cluster())).await;
    let client = connect(&proxy.url("app", "app")).await.unwrap();
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "app");
}

#[tokio::test]
async fn wrong_password_is_refused_with_28p01() {
    let proxy = start_proxy(&base_config(cluster())).await;
    assert_eq!(sqlstate(connect(&proxy.url("app", "wrong")).await), "28P01");
}

#[tokio::test]
async fn unknown_user_is_refused_with_28p01() {
    let proxy = start_proxy(&base_config(cluster())).await;
    assert_eq!(
        sqlstate(connect(&proxy.url("nobody", "app")).await),
        "28P01"
    );
}

#[tokio::test]
async fn md5_login_succeeds_and_wrong_md5_password_is_refused() {
    let proxy = start_proxy(&base_config_with(&[(
        "pool_mode = \"transaction\"",
        "pool_mode = \"transaction\"\nauth_method = \"md5\"",
    )]))
    .await;
    let client = connect(&proxy.url("app", "app")).await.unwrap();
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(sqlstate(connect(&proxy.url("app", "wrong")).await), "28P01");
}

#[tokio::test]
async fn trust_login_needs_no_password() {
    let proxy = trust_proxy(4).await;
    let client = connect(&format!("postgres://app@127.0.0.1:{}/app", proxy.port()))
        .await
        .unwrap();
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "app");
}

#[tokio::test]
async fn unknown_database_is_refused_with_3d000() {
    let proxy = start_proxy(&base_config(cluster())).await;
    let url = format!("postgres://app:app@127.0.0.1:{}/no_such_db", proxy.port());
    assert_eq!(sqlstate(connect(&url).await), "3D000");
}

// ---------------------------------------------------------------------------------------------
// COPY

#[tokio::test]
async fn copy_from_stdin_loads_every_row() {
    let proxy = start_proxy(&base_config_with(&[("size = 4", "size = 1")])).await;
    let client = proxy.connect().await;
    client
        .batch_execute("CREATE TABLE proto_copy_in (id int, name text)")
        .await
        .unwrap();
    let sink = client
        .copy_in("COPY proto_copy_in FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    // Several CopyData messages, one of them large, to cross buffer boundaries.
    for chunk in 0..10 {
        let mut data = String::new();
        for i in 0..500 {
            data.push_str(&format!(
                "{}\tname {}\n",
                chunk * 500 + i,
                "x".repeat(i % 50)
            ));
        }
        sink.send(Bytes::from(data)).await.unwrap();
    }
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 5000);
    assert_eq!(count_on_primary("proto_copy_in").await, 5000);
    // The session goes on normally after COPY.
    let row = client
        .query_one("SELECT max(id) FROM proto_copy_in", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 4999);
    // And the only server connection went back to the pool.
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn copy_from_stdin_with_bad_data_fails_and_the_client_goes_on() {
    let proxy = start_proxy(&base_config_with(&[("size = 4", "size = 1")])).await;
    let client = proxy.connect().await;
    client
        .batch_execute("CREATE TABLE proto_copy_bad (id int)")
        .await
        .unwrap();
    let sink = client
        .copy_in("COPY proto_copy_bad FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let sent = sink.send(Bytes::from_static(b"1\nnot a number\n3\n")).await;
    let finished = match sent {
        Ok(()) => sink.finish().await,
        Err(e) => Err(e),
    };
    assert_eq!(sqlstate(finished), "22P02");
    assert_eq!(count_on_primary("proto_copy_bad").await, 0);
    let row = client
        .query_one("SELECT 'after failed copy'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "after failed copy");
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn copy_from_stdin_over_simple_protocol_with_psql() {
    let proxy = start_proxy(&base_config_with(&[("size = 4", "size = 1")])).await;
    let client = proxy.connect().await;
    client
        .batch_execute("CREATE TABLE proto_copy_psql (id int, name text)")
        .await
        .unwrap();
    let data: String = (1..=1000).map(|i| format!("{i}\tname {i}\n")).collect();
    let mut psql = tokio::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "app",
            "-d",
            "app",
        ])
        .args([
            "-p",
            &proxy.port().to_string(),
            "-c",
            "COPY proto_copy_psql FROM STDIN",
        ])
        .env("PGPASSWORD", "app")
        .env("PGSSLMODE", "disable")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql runs");
    let mut stdin = psql.stdin.take().unwrap();
    stdin.write_all(data.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(HANG_GUARD, psql.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count_on_primary("proto_copy_psql").await, 1000);
    let row = client
        .query_one("SELECT count(*) FROM proto_copy_psql", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1000);
}

#[tokio::test]
async fn copy_to_stdout_returns_every_row() {
    let proxy = start_proxy(&base_config(cluster())).await;
    let primary = connect_direct(cluster().primary_port()).await;
    primary
        .batch_execute(
            "CREATE TABLE proto_copy_out (id int, name text);
             INSERT INTO proto_copy_out SELECT g, 'row ' || g FROM generate_series(1, 3000) g;",
        )
        .await
        .unwrap();
    let client = proxy.connect().await;
    let stream = client
        .copy_out("COPY proto_copy_out TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    let text: Vec<u8> = chunks.concat();
    let text = String::from_utf8(text).unwrap();
    assert_eq!(text.lines().count(), 3000);
    assert_eq!(text.lines().next(), Some("1\trow 1"));
    assert_eq!(count_on_primary("proto_copy_out").await, 3000);
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}

// ---------------------------------------------------------------------------------------------
// Cancel requests

#[tokio::test]
async fn cancel_request_stops_the_running_query() {
    let proxy = start_proxy(&base_config(cluster())).await;
    let client = proxy.connect().await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let result = client
            .simple_query("SELECT pg_sleep(30) /* proto_cancel */")
            .await;
        (client, result.map(|_| ()))
    });
    // Cancel once the statement is running on the server.
    let primary = connect_direct(cluster().primary_port()).await;
    let running = "SELECT count(*) FROM pg_stat_activity
                   WHERE state = 'active' AND query LIKE '%pg_sleep(30) /* proto_cancel */%'
                     AND pid <> pg_backend_pid()";
    tokio::time::timeout(HANG_GUARD, async {
        while primary
            .query_one(running, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the sleeping query never showed up in pg_stat_activity");
    token.cancel_query(NoTls).await.unwrap();

    let (client, result) = tokio::time::timeout(HANG_GUARD, sleeper)
        .await
        .expect("the cancelled query must return")
        .unwrap();
    assert_eq!(sqlstate(result), "57014");
    let row = client
        .query_one("SELECT 'after cancel'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "after cancel");
}

#[tokio::test]
async fn cancel_request_of_an_idle_client_leaves_other_clients_alone() {
    let proxy = start_proxy(&base_config_with(&[("size = 4", "size = 1")])).await;
    let idle = proxy.connect().await;
    idle.simple_query("SELECT 1").await.unwrap();
    let busy = proxy.connect().await;
    let running = tokio::spawn(async move {
        busy.simple_query("SELECT pg_sleep(2) /* proto_idle_cancel */")
            .await
            .map(|_| ())
    });
    let primary = connect_direct(cluster().primary_port()).await;
    let active = "SELECT count(*) FROM pg_stat_activity
                  WHERE state = 'active' AND query LIKE '%pg_sleep(2) /* proto_idle_cancel */%'
                    AND pid <> pg_backend_pid()";
    tokio::time::timeout(HANG_GUARD, async {
        while primary
            .query_one(active, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the sleeping query never showed up in pg_stat_activity");
    // The idle client's server connection is the one now running the other client's query.
    idle.cancel_token().cancel_query(NoTls).await.unwrap();
    let result = tokio::time::timeout(HANG_GUARD, running)
        .await
        .unwrap()
        .unwrap();
    assert!(
        result.is_ok(),
        "the other client's query was not cancelled: {result:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hand-made protocol clients: startup packets and malformed input

/// A client that writes protocol bytes by hand, for what tokio-postgres will not send.
struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
}

/// One message from the proxy: its tag and body.
type Message = (u8, Vec<u8>);

impl RawClient {
    async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connecting to the proxy");
        RawClient {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Logs in (the proxy must be in trust mode) with `params` besides user and database,
    /// and reads up to the first ReadyForQuery.
    async fn login(addr: SocketAddr, params: &[(&str, &str)]) -> RawClient {
        let mut client = RawClient::connect(addr).await;
        let mut all = vec![("user", "app"), ("database", "app")];
        all.extend_from_slice(params);
        client.send(&startup_packet(&all)).await;
        let messages = client.recv_until_ready().await;
        assert_eq!(
            messages.first().map(|(tag, body)| (*tag, body.clone())),
            Some((b'R', vec![0, 0, 0, 0])),
            "the login starts with AuthenticationOk: {messages:?}"
        );
        assert_eq!(error_code(&messages), None, "{messages:?}");
        client
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("writing to the proxy");
    }

    /// The next message, or `None` once the proxy has closed the connection.
    async fn recv(&mut self) -> Option<Message> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = usize::try_from(len).expect("sane length from the proxy") + 1;
                if self.buf.len() >= total {
                    let mut frame = self.buf.split_to(total);
                    let tag = frame.get_u8();
                    frame.advance(4);
                    return Some((tag, frame.to_vec()));
                }
            }
            let read = tokio::time::timeout(HANG_GUARD, self.stream.read_buf(&mut self.buf))
                .await
                .expect("the proxy neither answered nor closed the connection");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Every message up to the proxy closing the connection.
    async fn recv_until_closed(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        while let Some(message) = self.recv().await {
            messages.push(message);
        }
        messages
    }

    /// Every message up to and including ReadyForQuery.
    async fn recv_until_ready(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            let message = self.recv().await;
            let Some(message) = message else {
                panic!("connection closed before ReadyForQuery; got {messages:?}")
            };
            let ready = message.0 == b'Z';
            messages.push(message);
            if ready {
                return messages;
            }
        }
    }

    /// Runs a simple query: its rows as text, or the SQLSTATE of its error.
    async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        self.send(&query_message(sql)).await;
        let messages = self.recv_until_ready().await;
        if let Some(code) = error_code(&messages) {
            return Err(code);
        }
        Ok(messages
            .iter()
            .filter(|(tag, _)| *tag == b'D')
            .map(|(_, body)| data_row(body))
            .collect())
    }
}

fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    startup_packet_version(196_608, params) // protocol 3.0
}

fn startup_packet_version(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i32(version);
    for (name, value) in params {
        body.put_slice(name.as_bytes());
        body.put_u8(0);
        body.put_slice(value.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut packet = Vec::new();
    packet.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    packet.extend_from_slice(&body);
    packet
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn query_message(sql: &str) -> Vec<u8> {
    message(b'Q', format!("{sql}\0").as_bytes())
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Parse of `sql` (no parameters) as statement `name`.
fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name);
    cstr(&mut body, sql);
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'P', &body)
}

/// Bind of statement `statement` (no parameters, text results) to the unnamed portal.
fn bind(statement: &str) -> Vec<u8> {
    let mut body = vec![0];
    cstr(&mut body, statement);
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    message(b'B', &body)
}

/// Execute of the unnamed portal, all rows.
fn execute() -> Vec<u8> {
    message(b'E', &[0, 0, 0, 0, 0])
}

fn sync() -> Vec<u8> {
    message(b'S', b"")
}

/// Close of statement `name`.
fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    cstr(&mut body, name);
    message(b'C', &body)
}

/// The tags of `messages`, as a string.
fn tags(messages: &[Message]) -> String {
    messages.iter().map(|(tag, _)| char::from(*tag)).collect()
}

/// The text values of the DataRows among `messages`.
fn data_rows(messages: &[Message]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'D')
        .map(|(_, body)| data_row(body))
        .collect()
}

/// The SQLSTATE of the first ErrorResponse among `messages`.
fn error_code(messages: &[Message]) -> Option<String> {
    let (_, body) = messages.iter().find(|(tag, _)| *tag == b'E')?;
    body.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map(|code| String::from_utf8_lossy(code).into_owned())
}

fn data_row(mut body: &[u8]) -> Vec<Option<String>> {
    let columns = body.get_i16();
    (0..columns)
        .map(|_| {
            let len = body.get_i32();
            if len < 0 {
                return None;
            }
            let value = String::from_utf8_lossy(&body[..len as usize]).into_owned();
            body.advance(len as usize);
            Some(value)
        })
        .collect()
}

/// What a refused connection received: nothing, or a single ErrorResponse with SQLSTATE 08P01.
fn assert_refused_as_protocol_violation(messages: &[Message]) {
    assert!(
        messages.len() <= 1,
        "at most one ErrorResponse before the close: {messages:?}"
    );
    if let Some((tag, _)) = messages.first() {
        assert_eq!(*tag, b'E', "{messages:?}");
        assert_eq!(
            error_code(messages).as_deref(),
            Some("08P01"),
            "{messages:?}"
        );
    }
}

async fn assert_serves(proxy: &Proxy) {
    let client = proxy.connect().await;
    let row = client
        .query_one("SELECT 'still serving'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "still serving");
}

#[tokio::test]
async fn ssl_request_is_declined_and_login_proceeds_in_plaintext() {
    let proxy = trust_proxy(4).await;
    let mut raw = RawClient::connect(proxy.addr).await;
    raw.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await;
    let mut answer = [0u8; 1];
    tokio::time::timeout(HANG_GUARD, raw.stream.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer, b"N");
    raw.send(&startup_packet(&[("user", "app"), ("database", "app")]))
        .await;
    let messages = raw.recv_until_ready().await;
    assert_eq!(messages[0], (b'R', vec![0, 0, 0, 0]), "AuthenticationOk");
    assert_eq!(
        raw.simple_query("SELECT 'plain'").await,
        Ok(vec![vec![Some("plain".into())]])
    );
}

#[tokio::test]
async fn gssenc_request_is_declined_and_login_proceeds_in_plaintext() {
    let proxy = trust_proxy(4).await;
    let mut raw = RawClient::connect(proxy.addr).await;
    raw.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await;
    let mut answer = [0u8; 1];
    tokio::time::timeout(HANG_GUARD, raw.stream.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer, b"N");
    raw.send(&startup_packet(&[("user", "app"), ("database", "app")]))
        .await;
    let messages = raw.recv_until_ready().await;
    assert_eq!(messages[0], (b'R', vec![0, 0, 0, 0]), "AuthenticationOk");
}

#[tokio::test]
async fn jdbc_style_extra_float_digits_startup_parameter_is_honoured() {
    let proxy = trust_proxy(4).await;
    let params = [
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        ("extra_float_digits", "3"),
    ];
    let mut raw = RawClient::login(proxy.addr, &params).await;
    assert_eq!(
        raw.simple_query("SHOW extra_float_digits").await,
        Ok(vec![vec![Some("3".into())]])
    );
    assert_eq!(
        raw.simple_query("SHOW DateStyle").await,
        Ok(vec![vec![Some("ISO, MDY".into())]])
    );
}

#[tokio::test]
async fn garbage_instead_of_a_startup_packet_is_refused_and_others_are_unaffected() {
    let proxy = trust_proxy(4).await;
    let bystander = proxy.connect().await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &[0, 0, 0, 12, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4][..],
        &[0xff; 64][..],
    ] {
        let mut raw = RawClient::connect(proxy.addr).await;
        raw.send(garbage).await;
        assert_refused_as_protocol_violation(&raw.recv_until_closed().await);
    }
    let row = bystander
        .query_one("SELECT 'bystander'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "bystander");
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn startup_packet_claiming_100_mb_is_refused_before_its_body_arrives() {
    let proxy = trust_proxy(4).await;
    let mut raw = RawClient::connect(proxy.addr).await;
    let mut header = Vec::new();
    header.extend_from_slice(&100_000_000i32.to_be_bytes());
    header.extend_from_slice(&196_608i32.to_be_bytes());
    raw.send(&header).await;
    // Only the 8-byte header was sent: the proxy answers without waiting for (or buffering) the rest.
    let messages = raw.recv_until_closed().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(error_code(&messages).as_deref(), Some("08P01"));
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn message_claiming_2_gb_gets_08p01_and_the_connection_is_closed() {
    let proxy = trust_proxy(1).await;
    let mut raw = RawClient::login(proxy.addr, &[]).await;
    raw.send(&[b'Q', 0x7f, 0xff, 0xff, 0xff, b'S', b'E', b'L'])
        .await;
    let messages = raw.recv_until_closed().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(error_code(&messages).as_deref(), Some("08P01"));
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn client_vanishing_mid_message_inside_a_transaction_leaks_nothing() {
    let proxy = trust_proxy(1).await;
    let mut raw = RawClient::login(proxy.addr, &[]).await;
    raw.simple_query("CREATE TABLE proto_mid_message (id int)")
        .await
        .unwrap();
    raw.simple_query("BEGIN").await.unwrap();
    raw.simple_query("INSERT INTO proto_mid_message VALUES (1)")
        .await
        .unwrap();
    // A Query claiming 1000 bytes, of which only 10 arrive before the client goes away.
    let mut partial = vec![b'Q'];
    partial.extend_from_slice(&1000i32.to_be_bytes());
    partial.extend_from_slice(b"SELECT");
    raw.send(&partial).await;
    drop(raw);
    // The only server connection was rolled back and handed on.
    let client = proxy.connect().await;
    let row = client
        .query_one(
            "SELECT count(*), txid_current_if_assigned() IS NULL FROM proto_mid_message",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        0,
        "the open transaction was rolled back"
    );
    assert!(
        row.get::<_, bool>(1),
        "the next client is not inside the old transaction"
    );
    assert_eq!(count_on_primary("proto_mid_message").await, 0);
}

#[tokio::test]
async fn client_vanishing_mid_extended_batch_leaves_the_pool_working() {
    let proxy = trust_proxy(1).await;
    let mut raw = RawClient::login(proxy.addr, &[]).await;
    // Parse, Bind and Execute of a long statement, no Sync: the server is busy for this client.
    raw.send(&message(b'P', b"\0SELECT pg_sleep(20)\0\0\0"))
        .await;
    raw.send(&message(b'B', b"\0\0\0\0\0\0\0\0")).await;
    raw.send(&message(b'H', b"")).await;
    raw.send(&message(b'E', b"\0\0\0\0\0")).await;
    let parse_complete = raw.recv().await;
    assert_eq!(
        parse_complete.map(|m| m.0),
        Some(b'1'),
        "ParseComplete after Flush"
    );
    drop(raw);
    let client = tokio::time::timeout(HANG_GUARD, proxy.connect())
        .await
        .expect("a free pool");
    let row = client.query_one("SELECT 'next client'", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "next client");
}

#[tokio::test]
async fn startup_that_never_comes_times_out_with_08p01() {
    let proxy = start_proxy(&base_config_with(&[(
        "pool_mode = \"transaction\"",
        "pool_mode = \"transaction\"\nstartup_timeout_ms = 300",
    )]))
    .await;
    let mut silent = RawClient::connect(proxy.addr).await;
    silent.send(&[0, 0]).await; // half a length word, then nothing
    assert_refused_as_protocol_violation(&silent.recv_until_closed().await);
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn malformed_bind_gets_08p01_and_the_pool_stays_usable() {
    let proxy = trust_proxy(1).await;
    let mut raw = RawClient::login(proxy.addr, &[]).await;
    raw.send(&parse("", "SELECT 1")).await;
    raw.send(&message(b'B', b"portal-without-terminator")).await;
    let messages = raw.recv_until_closed().await;
    assert_eq!(
        error_code(&messages).as_deref(),
        Some("08P01"),
        "{messages:?}"
    );
    assert_serves(&proxy).await;
}

#[tokio::test]
async fn several_executes_pipelined_before_one_sync_are_all_answered() {
    let proxy = trust_proxy(1).await;
    let mut raw = RawClient::login(proxy.addr, &[]).await;
    let mut batch = Vec::new();
    for sql in ["SELECT 1", "SELECT 2", "SELECT 3"] {
        batch.extend(parse("", sql));
        batch.extend(bind(""));
        batch.extend(execute());
    }
    batch.extend(sync());
    raw.send(&batch).await;
    let messages = raw.recv_until_ready().await;
    assert_eq!(tags(&messages), "12DC12DC12DCZ");
    let values: Vec<Vec<Option<String>>> = data_rows(&messages);
    assert_eq!(
        values,
        vec![
            vec![Some("1".into())],
            vec![Some("2".into())],
            vec![Some("3".into())]
        ]
    );
    assert_eq!(messages.last(), Some(&(b'Z', vec![b'I'])));
}

#[tokio::test]
async fn same_statement_name_in_two_clients_keeps_each_clients_text() {
    let proxy = trust_proxy(1).await;
    let mut a = RawClient::login(proxy.addr, &[]).await;
    let mut b = RawClient::login(proxy.addr, &[]).await;
    for (client, text) in [(&mut a, "SELECT 'from a'"), (&mut b, "SELECT 'from b'")] {
        client.send(&[parse("stmt", text), sync()].concat()).await;
        assert_eq!(tags(&client.recv_until_ready().await), "1Z");
    }
    for round in 0..5 {
        for (client, expected) in [(&mut a, "from a"), (&mut b, "from b")] {
            client
                .send(&[bind("stmt"), execute(), sync()].concat())
                .await;
            let messages = client.recv_until_ready().await;
            assert_eq!(tags(&messages), "2DCZ", "round {round}");
            assert_eq!(data_rows(&messages), vec![vec![Some(expected.to_string())]]);
        }
    }
}

#[tokio::test]
async fn closed_statement_no_longer_exists_for_the_client() {
    let proxy = trust_proxy(1).await;
    let mut raw = RawClient::login(proxy.addr, &[]).await;
    raw.send(&[parse("gone", "SELECT 1"), sync()].concat())
        .await;
    assert_eq!(tags(&raw.recv_until_ready().await), "1Z");
    raw.send(&[close_statement("gone"), sync()].concat()).await;
    assert_eq!(tags(&raw.recv_until_ready().await), "3Z");
    raw.send(&[bind("gone"), execute(), sync()].concat()).await;
    let messages = raw.recv_until_ready().await;
    assert_eq!(
        error_code(&messages).as_deref(),
        Some("26000"),
        "{messages:?}"
    );
    assert_eq!(
        raw.simple_query("SELECT 'usable'").await,
        Ok(vec![vec![Some("usable".into())]])
    );
}

#[tokio::test]
async fn notice_reaches_the_client_before_the_result() {
    let proxy = trust_proxy(1).await;
    let mut raw = RawClient::login(proxy.addr, &[]).await;
    raw.send(&query_message(
        "DO $$ BEGIN RAISE NOTICE 'proto notice'; END $$",
    ))
    .await;
    let messages = raw.recv_until_ready().await;
    assert_eq!(tags(&messages), "NCZ");
    let notice = String::from_utf8_lossy(&messages[0].1).into_owned();
    assert!(notice.contains("proto notice"), "{notice:?}");
}

#[tokio::test]
async fn function_call_is_forwarded_and_answered() {
    let proxy = trust_proxy(1).await;
    let mut raw = RawClient::login(proxy.addr, &[]).await;
    // int4pl(2, 3), OID 177, arguments and result as text.
    let mut body = Vec::new();
    body.extend_from_slice(&177i32.to_be_bytes());
    body.extend_from_slice(&[0, 1, 0, 0]); // one format code: text
    body.extend_from_slice(&2i16.to_be_bytes());
    for arg in [b"2", b"3"] {
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(arg);
    }
    body.extend_from_slice(&[0, 0]); // result as text
    raw.send(&message(b'F', &body)).await;
    let messages = raw.recv_until_ready().await;
    assert_eq!(tags(&messages), "VZ");
    assert_eq!(messages[0].1, [&1i32.to_be_bytes()[..], b"5"].concat());
    assert_eq!(
        raw.simple_query("SELECT 'after call'").await,
        Ok(vec![vec![Some("after call".into())]])
    );
}

#[tokio::test]
async fn newer_protocol_minor_version_and_extensions_are_negotiated_down() {
    let proxy = trust_proxy(1).await;
    let mut raw = RawClient::connect(proxy.addr).await;
    let params = [
        ("user", "app"),
        ("database", "app"),
        ("_pq_.future_option", "on"),
    ];
    raw.send(&startup_packet_version(0x0003_0002, &params))
        .await; // protocol 3.2
    let messages = raw.recv_until_ready().await;
    let mut negotiate = Vec::new();
    negotiate.extend_from_slice(&0i32.to_be_bytes()); // newest minor version: 0
    negotiate.extend_from_slice(&1i32.to_be_bytes());
    negotiate.extend_from_slice(b"_pq_.future_option\0");
    assert_eq!(
        messages[0],
        (b'v', negotiate),
        "NegotiateProtocolVersion first"
    );
    assert_eq!(
        messages[1],
        (b'R', vec![0, 0, 0, 0]),
        "then AuthenticationOk"
    );
    assert_eq!(
        raw.simple_query("SELECT 'negotiated'").await,
        Ok(vec![vec![Some("negotiated".into())]])
    );
}
