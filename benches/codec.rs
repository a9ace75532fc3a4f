//! Cost of the hot-path codec, per forwarded message.
//!
//! Every group reports `Throughput::Elements(messages)`, so criterion's "thrpt" line reads as
//! messages per second and "time" divided by the element count is ns per message. Inputs are
//! built outside the timed loop; only framing (and dropping the frames) and the name rewrites,
//! which allocate the renamed message, are timed.
//!
//! Run: `cargo bench --bench codec`.

use bytes::{BufMut, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use pgshard::wire::extended::{Bind, Parse};
use pgshard::wire::split_frame;

/// The proxy's default cap (`server.max_message_bytes`).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Appends `tag len body` to `buf`.
fn put_frame(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.put_u8(tag);
    buf.put_i32((body.len() + 4) as i32);
    buf.put_slice(body);
}

/// Bind of an unnamed portal to statement `stmt` with one text parameter, as pgbench -M prepared sends.
fn bind_body(stmt: &str, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.push(0); // unnamed portal
    b.extend_from_slice(stmt.as_bytes());
    b.push(0);
    b.extend_from_slice(&0i16.to_be_bytes()); // parameter formats: all text
    b.extend_from_slice(&1i16.to_be_bytes()); // one parameter
    b.extend_from_slice(&(value.len() as i32).to_be_bytes());
    b.extend_from_slice(value);
    b.extend_from_slice(&0i16.to_be_bytes()); // result formats: all text
    b
}

fn parse_body(stmt: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(stmt.as_bytes());
    b.push(0);
    b.extend_from_slice(sql.as_bytes());
    b.push(0);
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&23i32.to_be_bytes()); // int4
    b
}

/// Client side of a pipelined extended-protocol burst: 32 × (Bind, Execute, Sync).
fn client_pipeline() -> (BytesMut, u64) {
    let mut buf = BytesMut::new();
    let mut n = 0;
    for i in 0..32 {
        put_frame(
            &mut buf,
            b'B',
            &bind_body("P0_1", format!("{}", 1000 + i).as_bytes()),
        );
        put_frame(&mut buf, b'E', b"\0\0\0\0\0"); // unnamed portal, no row limit
        put_frame(&mut buf, b'S', b"");
        n += 3;
    }
    (buf, n)
}

/// Server side of a result: 64 DataRows of ~100 bytes (3 columns).
fn server_rows() -> (BytesMut, u64) {
    let mut row = Vec::new();
    row.extend_from_slice(&3i16.to_be_bytes());
    for col in [
        &b"12345678"[..],
        &[b'x'; 60][..],
        &b"2024-01-01 00:00:00+00"[..],
    ] {
        row.extend_from_slice(&(col.len() as i32).to_be_bytes());
        row.extend_from_slice(col);
    }
    let mut buf = BytesMut::new();
    for _ in 0..64 {
        put_frame(&mut buf, b'D', &row);
    }
    (buf, 64)
}

/// COPY FROM STDIN traffic: 8 CopyData messages of 10 KiB.
fn copy_data() -> (BytesMut, u64) {
    let chunk = vec![b'7'; 10 * 1024];
    let mut buf = BytesMut::new();
    for _ in 0..8 {
        put_frame(&mut buf, b'd', &chunk);
    }
    (buf, 8)
}

/// Splits every frame off `buf`, touching each tag as the session does. The emptied `buf` keeps
/// the storage alive, so freeing it is not timed (a proxy reuses its read buffer).
fn drain(buf: &mut BytesMut) -> usize {
    let mut tags = 0usize;
    while let Some(frame) = split_frame(buf, MAX_MESSAGE).expect("well-formed input") {
        tags += frame.tag() as usize;
        black_box(&frame);
    }
    tags
}

fn bench_split_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("split_frame");
    for (name, (buf, n)) in [
        ("bind_execute_sync", client_pipeline()),
        ("data_row_100b", server_rows()),
        ("copy_data_10kib", copy_data()),
    ] {
        group.throughput(Throughput::Elements(n));
        group.bench_function(format!("{name}_x{n}"), |b| {
            b.iter_batched_ref(
                || buf.clone(),
                |buf| black_box(drain(buf)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn bench_rename(c: &mut Criterion) {
    let mut group = c.benchmark_group("extended_rename");
    group.throughput(Throughput::Elements(1));

    let parse = parse_body(
        "P0_1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    );
    group.bench_function("parse_decode_encode_renamed", |b| {
        b.iter(|| {
            let p = Parse::decode(black_box(&parse)).expect("well-formed Parse");
            black_box(p.encode_renamed("pgshard_s_4711_1"))
        })
    });

    let bind = bind_body("P0_1", b"123456");
    // Into an output buffer that is emptied after each, as a session's is once written.
    let mut out = bytes::BytesMut::with_capacity(256);
    group.bench_function("bind_decode_encode_renamed", |b| {
        b.iter(|| {
            let p = Bind::decode(black_box(&bind)).expect("well-formed Bind");
            p.encode_renamed_into("pgshard_s_4711_1", &mut out);
            black_box(&out);
            out.clear();
        })
    });
    group.finish();
}

criterion_group!(benches, bench_split_frame, bench_rename);
criterion_main!(benches);
