//! Fuzzes the extended-protocol decoders and re-encoders of `pgshard::wire::extended`: Parse,
//! Bind, Describe, Close (and Execute) bodies.
//!
//! Input: `[tag, n, n subset indexes..., body...]`; the tag picks the message (`P`, `B`, `D`, `C`,
//! `E`; anything else tries every decoder on the body). Checked: no panic; decode →
//! `encode_renamed` → decode gives the same fields under the new name (and the original bytes back
//! when renamed to the original name); a Bind's parameters and result formats survive
//! `encode_renamed`, `encode_unnamed` and `encode_subset` (which picks the chosen parameters, or
//! is refused when an index is out of range); a Describe/Close of a statement re-encodes to a
//! Target of the new name; every frame built carries its own length.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgshard::wire::extended::{Bind, BindParams, Execute, Parse, Target, TargetKind};
use pgshard::wire::HEADER_LEN;

/// A name like the ones the session gives statements (`pgshard_<xxh3-128>`).
const RENAMED: &str = "pgshard_0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Some((&tag, rest)) = data.split_first() else {
        return;
    };
    let Some((&n, rest)) = rest.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (indexes, body) = rest.split_at(n);
    let order: Vec<usize> = indexes.iter().map(|&i| usize::from(i)).collect();
    match tag {
        b'P' => parse(body),
        b'B' => bind(body, &order),
        b'D' | b'C' => target(tag, body),
        b'E' => {
            let _ = Execute::decode(body);
        }
        _ => {
            parse(body);
            bind(body, &order);
            target(b'D', body);
            let _ = Execute::decode(body);
        }
    }
});

/// Checks the frame's header and returns its body.
fn body_of(frame: &BytesMut, tag: u8) -> &[u8] {
    assert_eq!(frame[0], tag);
    let len = i32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
    assert_eq!(usize::try_from(len).unwrap(), frame.len() - 1);
    &frame[HEADER_LEN..]
}

fn parse(body: &[u8]) {
    let Ok(p) = Parse::decode(body) else {
        return;
    };
    let (query, types) = (p.query(), p.param_types());
    let out = p.encode_renamed(RENAMED);
    let again = Parse::decode(body_of(&out, b'P')).expect("a renamed Parse decodes");
    assert_eq!(again.name, RENAMED.as_bytes());
    assert_eq!(again.rest, p.rest);
    assert_eq!(again.query(), query);
    assert_eq!(again.param_types(), types);
    if let Ok(name) = std::str::from_utf8(p.name) {
        assert_eq!(body_of(&p.encode_renamed(name), b'P'), body);
    }
}

fn bind(body: &[u8], order: &[usize]) {
    let Ok(b) = Bind::decode(body) else {
        return;
    };
    let params = b.params();
    let results = b.result_formats();

    let out = b.encode_renamed(RENAMED);
    let again = Bind::decode(body_of(&out, b'B')).expect("a renamed Bind decodes");
    assert_eq!(again.portal, b.portal);
    assert_eq!(again.statement, RENAMED.as_bytes());
    assert_eq!(again.rest, b.rest);
    assert_eq!(again.params(), params);
    assert_eq!(again.result_formats(), results);
    if let Ok(name) = std::str::from_utf8(b.statement) {
        assert_eq!(body_of(&b.encode_renamed(name), b'B'), body);
    }

    for text in [false, true] {
        match b.encode_unnamed(text) {
            Ok(out) => {
                let again = Bind::decode(body_of(&out, b'B')).expect("an unnamed Bind decodes");
                assert_eq!((again.portal, again.statement), (&b""[..], &b""[..]));
                assert_eq!(again.params(), params);
                if text {
                    assert_eq!(again.result_formats(), Ok(Vec::new()));
                } else {
                    assert_eq!(again.rest, b.rest);
                }
            }
            Err(e) => assert!(params.is_err() && text, "encode_unnamed({text}): {e:?}"),
        }
    }

    let (Ok(params), Ok(results)) = (params, results) else {
        assert!(b.encode_subset(order).is_err());
        return;
    };
    let in_range = order.iter().all(|&i| i < params.values.len())
        && (params.formats.len() <= 1 || order.iter().all(|&i| i < params.formats.len()));
    match b.encode_subset(order) {
        Ok(out) => {
            assert!(
                in_range,
                "encode_subset took indexes {order:?} of {params:?}"
            );
            let again = Bind::decode(body_of(&out, b'B')).expect("a subset Bind decodes");
            assert_eq!((again.portal, again.statement), (&b""[..], &b""[..]));
            let formats = match params.formats.as_slice() {
                [] | [_] => params.formats.clone(),
                each => order.iter().map(|&i| each[i]).collect(),
            };
            let expected = BindParams {
                formats,
                values: order.iter().map(|&i| params.values[i]).collect(),
            };
            assert_eq!(again.params(), Ok(expected));
            assert_eq!(again.result_formats(), Ok(results));
        }
        Err(_) => assert!(!in_range, "encode_subset refused {order:?} of {params:?}"),
    }
}

fn target(tag: u8, body: &[u8]) {
    let what = if tag == b'D' { "Describe" } else { "Close" };
    let Ok(t) = Target::decode(body, what) else {
        return;
    };
    assert_eq!(
        body[0],
        if t.kind == TargetKind::Statement {
            b'S'
        } else {
            b'P'
        }
    );
    assert_eq!(&body[1..1 + t.name.len()], t.name);
    if t.kind == TargetKind::Statement {
        let out = Target::encode_statement(tag, RENAMED);
        let again = Target::decode(body_of(&out, tag), what).expect("a renamed target decodes");
        assert_eq!(again.kind, TargetKind::Statement);
        assert_eq!(again.name, RENAMED.as_bytes());
    }
}
