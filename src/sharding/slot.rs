//! Key bytes to slot: the top 12 bits of XXH3-64 (seed 0).

use xxhash_rust::xxh3::xxh3_64;

/// Number of slots the key space is cut into. Slots are `0..SLOT_COUNT`.
pub const SLOT_COUNT: u16 = 4096;

/// Bits of the hash dropped to leave a slot number (64 - log2(SLOT_COUNT)).
const SLOT_SHIFT: u32 = 64 - SLOT_COUNT.trailing_zeros();

/// Slot of a key's bytes: `xxh3_64(key_bytes) >> 52`.
///
/// The top bits, not `% 4096`, so a slot is a contiguous range of the hash space and can later be
/// split into finer slots without moving keys across an existing boundary.
pub fn slot_of_bytes(key_bytes: &[u8]) -> u16 {
    // The shift leaves 12 significant bits, so the value always fits a u16.
    (xxh3_64(key_bytes) >> SLOT_SHIFT) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_leaves_exactly_twelve_bits() {
        assert_eq!(SLOT_SHIFT, 52);
        let max = (0..100_000i64)
            .map(|k| slot_of_bytes(&k.to_le_bytes()))
            .max();
        assert_eq!(max, Some(SLOT_COUNT - 1));
    }

    #[test]
    fn slot_is_the_top_twelve_bits_of_the_hash() {
        for bytes in [&b""[..], b"a", b"alice", &42i64.to_le_bytes()] {
            assert_eq!(u64::from(slot_of_bytes(bytes)), xxh3_64(bytes) >> 52);
        }
    }
}
