//! Two "floors" for `benches/pgbench.sh` (`FLOORS=1`): the least a transaction pooler can spend
//! per `pgbench -S` transaction on this machine, to put pgshard's own cost in proportion. Never a
//! proxy for anything but that measurement: no routing, no session state, no auth of its own
//! clients (it answers AuthenticationOk), simple and extended frames forwarded unread, a server
//! connection released at ReadyForQuery 'I' (prepared statements would break across
//! connections, so only the simple protocol is measured with it).
//!
//! `FLOOR_MODE=tokio`: pgshard's own parts (a current-thread tokio runtime, a task per client,
//! `transport::Conn`, frames cut by `next_frame`, server logins by `backend::ServerConnection`)
//! without the session. `FLOOR_MODE=mio`: one mio loop as PgBouncer runs one libevent loop (one
//! read and one write per readiness, plain `Vec` buffers), server logins with SCRAM by
//! postgres-protocol. Both wait for a free server connection in FIFO order.
//!
//! Environment: `LISTEN` (address), `SERVER` (PostgreSQL's address), `POOL` (server
//! connections, 20); the servers are logged in to as user `app`, password `app`, database
//! `pgbench`, as the benchmark's.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use pgshard::backend::connection::{LoginParams, ServerConnection};
use pgshard::transport::Conn;
use pgshard::wire::startup::{split_startup, StartupPacket};
use pgshard::wire::{build, TransactionStatus};

const SSL_REQUEST: u32 = 80_877_103;

fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is required"));
    let (listen, server) = (var("LISTEN"), var("SERVER"));
    let size = std::env::var("POOL").map_or(20, |v| v.parse().expect("POOL is a number"));
    match var("FLOOR_MODE").as_str() {
        "tokio" => tokio_floor::run(&listen, &server, size),
        "mio" => mio_floor::run(&listen, &server, size),
        other => panic!("FLOOR_MODE is tokio or mio, not {other}"),
    }
}

/// What a proxy answers a client's StartupMessage with (no password asked).
fn login_answer(out: &mut BytesMut) {
    build::authentication_ok(out);
    for (name, value) in [
        ("server_version", "15.0"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        build::parameter_status(out, name, value);
    }
    build::backend_key_data(out, 1, 1);
    build::ready_for_query(out, TransactionStatus::Idle);
}

/// Whether `frame` (a whole server frame) is ReadyForQuery outside a transaction.
fn ends_transaction(frame: &[u8]) -> bool {
    frame.first() == Some(&b'Z') && frame.get(5) == Some(&b'I')
}

mod tokio_floor {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Semaphore;

    struct Pool {
        idle: Mutex<Vec<ServerConnection>>,
        permits: Semaphore,
    }

    pub fn run(listen: &str, server: &str, size: usize) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let login = LoginParams {
                addr: server.to_string(),
                database: "pgbench".into(),
                user: "app".into(),
                password: "app".into(),
                connect_timeout: Duration::from_secs(5),
                tls: None,
            };
            let mut idle = Vec::new();
            for _ in 0..size {
                idle.push(
                    ServerConnection::connect(&login)
                        .await
                        .expect("server login"),
                );
            }
            let pool = Arc::new(Pool {
                idle: Mutex::new(idle),
                permits: Semaphore::new(size),
            });
            let listener = TcpListener::bind(listen).await.expect("listen");
            loop {
                let (stream, _) = listener.accept().await.expect("accept");
                tokio::spawn(client(stream, pool.clone()));
            }
        });
    }

    async fn client(stream: TcpStream, pool: Arc<Pool>) -> std::io::Result<()> {
        let _ = stream.set_nodelay(true);
        let mut client = Conn::new(stream, BytesMut::new());
        loop {
            match split_startup(&mut client.input) {
                Ok(Some(StartupPacket::Startup(_))) => break,
                Ok(Some(_)) => client.write_all(b"N").await?,
                Ok(None) if client.fill().await? > 0 => {}
                _ => return Ok(()),
            }
        }
        login_answer(&mut client.output);
        client.drain().await?;
        loop {
            if client.input.is_empty() && client.fill().await? == 0 {
                return Ok(());
            }
            let mut held = None;
            while let Some(frame) = client.next_frame(1 << 30).ok().flatten() {
                if frame.tag() == b'X' {
                    return Ok(());
                }
                if held.is_none() {
                    let permit = pool.permits.acquire().await.expect("open");
                    permit.forget();
                    held = pool.idle.lock().expect("pool").pop();
                }
                let server = held.as_mut().expect("a permit has a connection");
                server.io().output.extend_from_slice(&frame.bytes);
            }
            let Some(mut server) = held else { continue };
            server.io().drain().await?;
            let mut done = false;
            while !done {
                if server.io().fill().await? == 0 {
                    return Ok(());
                }
                while let Some(frame) = server.io().next_frame(1 << 30).ok().flatten() {
                    client.output.extend_from_slice(&frame.bytes);
                    done |= ends_transaction(&frame.bytes);
                }
            }
            pool.idle.lock().expect("pool").push(server);
            pool.permits.add_permits(1);
            client.drain().await?;
        }
    }
}

mod mio_floor {
    use super::*;
    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    const LISTENER: Token = Token(0);
    /// Tokens from here on are server connections; below, clients.
    const SERVERS: usize = 1 << 30;

    /// One socket with its buffers; `peer` is the other side it is paired with now.
    struct Side {
        stream: TcpStream,
        input: Vec<u8>,
        output: Vec<u8>,
        peer: Option<usize>,
        started: bool,
    }

    impl Side {
        fn new(stream: TcpStream) -> Side {
            Side {
                stream,
                input: Vec::with_capacity(8192),
                output: Vec::with_capacity(8192),
                peer: None,
                started: false,
            }
        }

        /// One read, as tokio's (a short read means the socket is drained); `false` at EOF.
        fn fill(&mut self) -> bool {
            let mut buf = [0u8; 8192];
            match self.stream.read(&mut buf) {
                Ok(0) => false,
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    true
                }
                Err(e) => e.kind() == ErrorKind::WouldBlock,
            }
        }

        fn flush(&mut self) {
            while !self.output.is_empty() {
                match self.stream.write(&self.output) {
                    Ok(n) => drop(self.output.drain(..n)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) => panic!("write: {e}"),
                }
            }
        }
    }

    /// The length of the whole frame at the start of `b`, if it is all there.
    fn frame_len(b: &[u8]) -> Option<usize> {
        let len = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as usize + 1;
        (b.len() >= len).then_some(len)
    }

    struct Floor {
        poll: Poll,
        clients: HashMap<usize, Side>,
        servers: HashMap<usize, Side>,
        idle: Vec<usize>,
        waiting: VecDeque<usize>,
    }

    pub fn run(listen: &str, server: &str, size: usize) {
        let poll = Poll::new().expect("epoll");
        let mut floor = Floor {
            poll,
            clients: HashMap::new(),
            servers: HashMap::new(),
            idle: Vec::new(),
            waiting: VecDeque::new(),
        };
        for i in 0..size {
            let stream = login(server);
            stream.set_nonblocking(true).expect("non-blocking");
            let mut stream = TcpStream::from_std(stream);
            let token = SERVERS + i;
            floor
                .poll
                .registry()
                .register(&mut stream, Token(token), Interest::READABLE)
                .expect("register");
            floor.servers.insert(token, Side::new(stream));
            floor.idle.push(token);
        }
        let mut listener = TcpListener::bind(listen.parse().expect("LISTEN")).expect("listen");
        let registry = floor.poll.registry();
        registry
            .register(&mut listener, LISTENER, Interest::READABLE)
            .expect("register");
        let mut next = 1;
        let mut events = Events::with_capacity(256);
        loop {
            floor.poll.poll(&mut events, None).expect("epoll_wait");
            for event in &events {
                match event.token().0 {
                    0 => {
                        while let Ok((mut stream, _)) = listener.accept() {
                            let _ = stream.set_nodelay(true);
                            let interest = Interest::READABLE;
                            let registry = floor.poll.registry();
                            registry
                                .register(&mut stream, Token(next), interest)
                                .expect("register");
                            floor.clients.insert(next, Side::new(stream));
                            next += 1;
                        }
                    }
                    t if t >= SERVERS => floor.on_server(t),
                    t => floor.on_client(t),
                }
            }
        }
    }

    impl Floor {
        fn on_server(&mut self, token: usize) {
            let server = self.servers.get_mut(&token).expect("a server");
            assert!(server.fill(), "a server connection closed");
            let Some(id) = server.peer else { return };
            let Some(client) = self.clients.get_mut(&id) else {
                return;
            };
            let mut done = false;
            while let Some(len) = frame_len(&server.input) {
                done |= ends_transaction(&server.input[..len]);
                client.output.extend_from_slice(&server.input[..len]);
                server.input.drain(..len);
            }
            if done {
                server.peer = None;
                client.peer = None;
                self.idle.push(token);
            }
            client.flush();
            if done {
                if let Some(waiter) = self.waiting.pop_front() {
                    self.forward(waiter);
                }
            }
        }

        fn on_client(&mut self, id: usize) {
            let Some(client) = self.clients.get_mut(&id) else {
                return;
            };
            if !client.fill() {
                let mut gone = self.clients.remove(&id).expect("a client");
                let _ = self.poll.registry().deregister(&mut gone.stream);
                return;
            }
            if client.started {
                self.forward(id);
                return;
            }
            let Some(len) = client
                .input
                .get(..4)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
            else {
                return;
            };
            let len = len as usize;
            if client.input.len() < len.max(8) {
                return;
            }
            let code = u32::from_be_bytes(client.input[4..8].try_into().unwrap());
            client.input.drain(..len);
            if code == SSL_REQUEST {
                client.output.push(b'N');
            } else {
                client.started = true;
                let mut answer = BytesMut::new();
                login_answer(&mut answer);
                client.output.extend_from_slice(&answer);
            }
            client.flush();
        }

        /// Sends the client's whole frames to its server connection (taking one if it holds
        /// none, or waiting in line for one).
        fn forward(&mut self, id: usize) {
            let Some(client) = self.clients.get_mut(&id) else {
                return;
            };
            let mut target = client.peer;
            while let Some(len) = frame_len(&client.input) {
                if client.input[0] == b'X' {
                    client.input.clear();
                    break;
                }
                let token = match target {
                    Some(token) => token,
                    None => {
                        let Some(token) = self.idle.pop() else {
                            self.waiting.push_back(id);
                            return;
                        };
                        client.peer = Some(token);
                        self.servers.get_mut(&token).expect("a server").peer = Some(id);
                        target = Some(token);
                        token
                    }
                };
                let server = self.servers.get_mut(&token).expect("a server");
                server.output.extend_from_slice(&client.input[..len]);
                client.input.drain(..len);
            }
            if let Some(token) = target {
                self.servers.get_mut(&token).expect("a server").flush();
            }
        }
    }

    /// A blocking login to PostgreSQL with SCRAM, up to its first ReadyForQuery.
    fn login(addr: &str) -> std::net::TcpStream {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect to the server");
        stream.set_nodelay(true).expect("nodelay");
        let mut startup = BytesMut::new();
        build::startup_message(&mut startup, &[("user", "app"), ("database", "pgbench")]);
        stream.write_all(&startup).expect("startup");
        let mut scram = ScramSha256::new(b"app", ChannelBinding::unsupported());
        loop {
            let mut header = [0u8; 5];
            stream.read_exact(&mut header).expect("a server message");
            let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize - 4;
            let mut body = vec![0; len];
            stream.read_exact(&mut body).expect("a server message");
            let mut out = BytesMut::new();
            match (
                header[0],
                body.get(..4)
                    .map(|c| u32::from_be_bytes(c.try_into().unwrap())),
            ) {
                (b'R', Some(10)) => {
                    build::sasl_initial_response(&mut out, "SCRAM-SHA-256", scram.message())
                }
                (b'R', Some(11)) => {
                    scram.update(&body[4..]).expect("SCRAM");
                    build::sasl_response(&mut out, scram.message());
                }
                (b'R', Some(12)) => scram.finish(&body[4..]).expect("SCRAM"),
                (b'Z', _) => return stream,
                (b'E', _) => panic!("the server refused the login"),
                _ => {}
            }
            stream.write_all(&out).expect("a login message");
        }
    }
}
