//! Fuzzes `pgshard::wire::split_frame` over arbitrary bytes arriving in arbitrary chunks.
//!
//! Input: `[max selector, chunk sizes (4 bytes), stream...]`. The stream is fed to a read buffer
//! chunk by chunk, the way the session's reads fill it, and frames are split off after each chunk.
//! Checked: no panic; `Ok(None)` leaves the buffer untouched and only when the frame is really
//! incomplete; a frame is exactly the bytes its header claims and at most `max + 1` long; an
//! invalid or oversize length is an error (naming that length) and leaves the buffer untouched;
//! the frames re-concatenate to a prefix of the input, and frames + what is left = what was fed;
//! `split_frame` never makes an allocation larger than a small fixed header (in particular none
//! sized by the peer's claimed length).

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgshard::wire::{split_frame, WireError, HEADER_LEN};

/// Counts the largest single allocation made while `MEASURING` is set.
struct Measuring;

static MEASURING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if MEASURING.load(Ordering::Relaxed) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Measuring {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Measuring = Measuring;

/// `split_frame` may allocate the small shared header `BytesMut::split_to` needs, nothing more.
const MAX_OWN_ALLOCATION: usize = 256;

/// Message size limits to try: tiny ones make "too large" reachable with short inputs.
const LIMITS: [usize; 8] = [0, 3, 4, 5, 16, 300, 8192, 1 << 30];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((chunks, stream)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let max = LIMITS[usize::from(selector) % LIMITS.len()];
    let chunk_sizes: Vec<usize> = chunks.iter().map(|&c| usize::from(c) + 1).collect();

    let mut buf = BytesMut::new();
    let mut frames: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut error = None;
    'feed: for size in chunk_sizes.iter().cycle() {
        if fed == stream.len() {
            break;
        }
        let end = (fed + size).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            let before = buf.to_vec();
            let capacity = buf.capacity();
            LARGEST.store(0, Ordering::Relaxed);
            MEASURING.store(true, Ordering::Relaxed);
            let result = split_frame(&mut buf, max);
            MEASURING.store(false, Ordering::Relaxed);
            let largest = LARGEST.load(Ordering::Relaxed);
            assert!(
                largest <= MAX_OWN_ALLOCATION,
                "split_frame allocated {largest} bytes"
            );
            assert!(buf.capacity() <= capacity, "split_frame grew the buffer");
            let claimed = before
                .get(1..HEADER_LEN)
                .map(|l| i32::from_be_bytes([l[0], l[1], l[2], l[3]]));
            match result {
                Ok(Some(frame)) => {
                    let len = claimed.expect("a frame has a header");
                    let total = usize::try_from(len).expect("a frame's length is positive") + 1;
                    assert!(
                        len >= 4 && total - 1 <= max,
                        "length {len} passed, max {max}"
                    );
                    assert_eq!(frame.bytes.len(), total);
                    assert_eq!(&frame.bytes[..], &before[..total]);
                    assert_eq!(&buf[..], &before[total..]);
                    assert_eq!(frame.tag(), before[0]);
                    assert_eq!(frame.body(), &before[HEADER_LEN..total]);
                    frames.extend_from_slice(&frame.bytes);
                }
                Ok(None) => {
                    assert_eq!(&buf[..], &before[..], "Ok(None) changed the buffer");
                    if let Some(len) = claimed {
                        let len = usize::try_from(len).expect("Ok(None) with a negative length");
                        assert!(
                            len >= 4 && len <= max,
                            "Ok(None) for length {len}, max {max}"
                        );
                        assert!(
                            before.len() < len + 1,
                            "Ok(None) with a whole frame buffered"
                        );
                    }
                    break;
                }
                Err(e) => {
                    assert_eq!(&buf[..], &before[..], "an error changed the buffer");
                    let len = claimed.expect("an error before the header is complete");
                    match e {
                        WireError::BadLength(n) => assert!(n == i64::from(len) && len < 4),
                        WireError::TooLarge { len: n, max: m } => {
                            assert_eq!(m, max);
                            assert!(usize::try_from(len) == Ok(n) && n > max);
                        }
                        other => panic!("unexpected error {other:?}"),
                    }
                    error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    // Frames then what is left over are exactly the bytes fed so far.
    assert_eq!(&frames[..], &stream[..frames.len()]);
    assert_eq!(&buf[..], &stream[frames.len()..fed]);
    if error.is_none() {
        assert_eq!(fed, stream.len());
    }
});
