//! Fuzzes the startup phase's decoders: `pgshard::wire::startup::split_startup` over arbitrary
//! bytes in arbitrary chunks, the settings derived from a StartupMessage, and the SCRAM messages
//! that follow it.
//!
//! Input: `[chunk sizes (2 bytes), stream...]`. Checked: no panic; `Ok(None)` leaves the buffer
//! untouched and only while the packet is really incomplete; a decoded packet took exactly the
//! bytes its length claims; errors name the length at fault; a decoded StartupMessage re-encodes
//! (with `wire::build::startup_message`) to a packet that decodes to the same message, or is
//! refused as too large when lossy UTF-8 decoding made it grow; a CancelRequest re-encodes (with
//! `wire::build::cancel_request`) to the bytes it came from. The bytes after the first packet are
//! a SASLInitialResponse and SASLResponse payload for `auth::ScramServer` (split at the first NUL).

#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgshard::auth::{ScramServer, ScramVerifier};
use pgshard::session::settings;
use pgshard::wire::startup::{split_startup, StartupMessage, StartupPacket, MAX_STARTUP_LEN};
use pgshard::wire::{build, WireError};

fuzz_target!(|data: &[u8]| {
    let Some((chunks, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let chunk_sizes = [usize::from(chunks[0]) + 1, usize::from(chunks[1]) * 64 + 1];
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for size in chunk_sizes.iter().cycle() {
        let end = (fed + size).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        let before = buf.to_vec();
        let claimed = before.first_chunk::<4>().map(|l| i32::from_be_bytes(*l));
        match split_startup(&mut buf) {
            Ok(None) => {
                assert_eq!(&buf[..], &before[..], "Ok(None) changed the buffer");
                if let Some(len) = claimed {
                    let len = usize::try_from(len).expect("Ok(None) with a negative length");
                    assert!((8..=MAX_STARTUP_LEN).contains(&len), "Ok(None) for {len}");
                    assert!(before.len() < len, "Ok(None) with a whole packet buffered");
                }
                if fed == stream.len() {
                    return;
                }
            }
            Ok(Some(packet)) => {
                let len = usize::try_from(claimed.expect("a packet has a length")).unwrap();
                assert!((8..=MAX_STARTUP_LEN).contains(&len));
                assert_eq!(&buf[..], &before[len..], "the packet took {len} bytes");
                check_packet(&packet, &before[..len]);
                after_startup(&packet, &stream[len..]);
                return;
            }
            Err(e) => {
                let len = claimed.expect("an error before the length is complete");
                match e {
                    WireError::BadLength(n) => assert!(n == i64::from(len) && len < 8),
                    WireError::StartupTooLarge(n) => {
                        assert!(usize::try_from(len) == Ok(n) && n > MAX_STARTUP_LEN)
                    }
                    WireError::UnsupportedProtocol { major, .. } => assert_ne!(major, 3),
                    WireError::Malformed { .. } => {}
                    other => panic!("unexpected error {other:?}"),
                }
                return;
            }
        }
    }
});

/// Re-encodes what was decoded and checks it decodes the same.
fn check_packet(packet: &StartupPacket, raw: &[u8]) {
    match packet {
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {}
        StartupPacket::CancelRequest {
            process_id,
            secret_key,
        } => {
            let mut out = BytesMut::new();
            build::cancel_request(&mut out, *process_id, *secret_key);
            assert_eq!(&out[..], raw);
        }
        StartupPacket::Startup(message) => {
            assert!(message.params.iter().all(|(k, _)| !k.is_empty()));
            let params: Vec<(&str, &str)> = message
                .params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut out = BytesMut::new();
            build::startup_message(&mut out, &params);
            out[6..8].copy_from_slice(&message.minor_version.to_be_bytes());
            let encoded_len = out.len();
            match split_startup(&mut out) {
                Ok(Some(StartupPacket::Startup(again))) => {
                    assert!(encoded_len <= MAX_STARTUP_LEN);
                    assert_eq!(&again, message);
                    assert!(out.is_empty());
                }
                Err(WireError::StartupTooLarge(n)) => {
                    assert!(n == encoded_len && n > raw.len(), "grew from {}", raw.len())
                }
                other => panic!("re-encoded {message:?} decodes as {other:?}"),
            }
        }
    }
}

/// What the session does next with a StartupMessage: its settings, then a SCRAM exchange.
fn after_startup(packet: &StartupPacket, rest: &[u8]) {
    let StartupPacket::Startup(message) = packet else {
        return;
    };
    settings_of(message);
    static VERIFIER: OnceLock<ScramVerifier> = OnceLock::new();
    let verifier = VERIFIER.get_or_init(|| ScramVerifier::from_password("fuzz"));
    let user = message.param("user").unwrap_or_default();
    let mut scram = ScramServer::new(user, verifier.clone(), "fuzznonce".to_string());
    let (first, last) = match rest.iter().position(|&b| b == 0) {
        Some(nul) => (&rest[..nul], &rest[nul + 1..]),
        None => (rest, &[][..]),
    };
    if scram.client_first("SCRAM-SHA-256", first).is_ok() {
        let _ = scram.client_final(last);
    }
    // A second SASLResponse is refused, never panics.
    assert!(scram.client_final(last).is_err());
}

fn settings_of(message: &StartupMessage) {
    if let Ok(settings) = settings::from_startup(&message.params) {
        for (name, _) in settings {
            assert!(!name.is_empty());
            assert!(name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'));
        }
    }
    if let Some(options) = message.param("options") {
        let _ = settings::parse_options(options);
    }
}
