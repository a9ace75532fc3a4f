//! Text-format column values re-encoded in PostgreSQL's binary format, for results pgshard
//! merges in text but a client asked for in binary. Covers the types merges compare and
//! compute (integers, floats, numeric, bool, text-like, uuid, bytea, json/jsonb, dates and
//! timestamps in DateStyle ISO); any other type
//! is `None`, never a guess.

/// The binary form of `text`, a value of type `oid` in text format; `None` for a type this does
/// not encode or a malformed value.
pub fn text_to_binary(oid: u32, text: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(text).ok()?;
    Some(match oid {
        16 => vec![u8::from(s == "t")],
        21 => s.parse::<i16>().ok()?.to_be_bytes().to_vec(),
        23 => s.parse::<i32>().ok()?.to_be_bytes().to_vec(),
        20 => s.parse::<i64>().ok()?.to_be_bytes().to_vec(),
        26 => s.parse::<u32>().ok()?.to_be_bytes().to_vec(),
        700 => s.parse::<f32>().ok()?.to_be_bytes().to_vec(),
        701 => s.parse::<f64>().ok()?.to_be_bytes().to_vec(),
        // text, name, bpchar, varchar, json: the binary form is the text.
        25 | 19 | 1042 | 1043 | 114 => text.to_vec(),
        3802 => [&[1u8][..], text].concat(),
        2950 => uuid(s)?,
        17 => bytea(s)?,
        1700 => numeric(s)?,
        1082 => i32::try_from(super::datetime::parse_date(text)?)
            .ok()?
            .to_be_bytes()
            .to_vec(),
        1114 | 1184 => {
            let micros = super::datetime::parse(text, oid == 1184)?;
            let micros = match micros {
                i128::MAX => i64::MAX,
                i128::MIN => i64::MIN,
                m => i64::try_from(m).ok()?,
            };
            micros.to_be_bytes().to_vec()
        }
        _ => return None,
    })
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn uuid(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
    if digits.len() != 32 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
        .collect()
}

fn bytea(s: &str) -> Option<Vec<u8>> {
    let hex = s.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
        .collect()
}

/// numeric's binary form: digit count, weight (of the first digit, in base 10000), sign,
/// display scale, then the base-10000 digits.
fn numeric(s: &str) -> Option<Vec<u8>> {
    let header = |ndigits: i16, weight: i16, sign: u16, dscale: u16| {
        let mut out = Vec::with_capacity(8 + 2 * ndigits.max(0) as usize);
        out.extend_from_slice(&ndigits.to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        out
    };
    match s {
        "NaN" => return Some(header(0, 0, 0xC000, 0)),
        "Infinity" => return Some(header(0, 0, 0xD000, 0)),
        "-Infinity" => return Some(header(0, 0, 0xF000, 0)),
        _ => {}
    }
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let dscale = u16::try_from(frac.len()).ok()?;
    let int_pad = (4 - int.len() % 4) % 4;
    let int_digits: String = "0".repeat(int_pad) + int;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let frac_digits: String = frac.to_string() + &"0".repeat(frac_pad);
    let mut groups: Vec<i16> = int_digits
        .as_bytes()
        .chunks(4)
        .chain(frac_digits.as_bytes().chunks(4))
        .map(|g| std::str::from_utf8(g).ok()?.parse().ok())
        .collect::<Option<_>>()?;
    let mut weight = i16::try_from(int_digits.len() / 4).ok()? - 1;
    let leading = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..leading);
    weight -= i16::try_from(leading).ok()?;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        return Some(header(0, 0, 0, dscale));
    }
    let sign = if negative { 0x4000 } else { 0 };
    let mut out = header(i16::try_from(groups.len()).ok()?, weight, sign, dscale);
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(bytes: &[u8]) -> Vec<i16> {
        bytes
            .chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numerics_encode_as_base_10000_digits_with_weight_and_scale() {
        // ndigits, weight, sign, dscale, digits...
        assert_eq!(
            words(&text_to_binary(1700, b"123.4500").unwrap()),
            [2, 0, 0, 4, 123, 4500]
        );
        assert_eq!(
            words(&text_to_binary(1700, b"0.5").unwrap()),
            [1, -1, 0, 1, 5000]
        );
        assert_eq!(
            words(&text_to_binary(1700, b"-12345678").unwrap()),
            [2, 1, 0x4000, 0, 1234, 5678]
        );
        assert_eq!(words(&text_to_binary(1700, b"0.00").unwrap()), [0, 0, 0, 2]);
        assert_eq!(
            words(&text_to_binary(1700, b"10000").unwrap()),
            [1, 1, 0, 0, 1]
        );
        assert_eq!(
            words(&text_to_binary(1700, b"0.00001").unwrap()),
            [1, -2, 0, 5, 1000]
        );
        assert_eq!(text_to_binary(1700, b"1e5"), None);
    }

    #[test]
    fn fixed_width_and_text_like_types_encode() {
        assert_eq!(text_to_binary(20, b"-2").unwrap(), (-2i64).to_be_bytes());
        assert_eq!(text_to_binary(23, b"7").unwrap(), 7i32.to_be_bytes());
        assert_eq!(
            text_to_binary(701, b"-Infinity").unwrap(),
            f64::NEG_INFINITY.to_be_bytes()
        );
        assert_eq!(text_to_binary(16, b"t").unwrap(), [1]);
        assert_eq!(text_to_binary(25, b"abc").unwrap(), b"abc");
        assert_eq!(text_to_binary(3802, b"{}").unwrap(), b"\x01{}");
        assert_eq!(text_to_binary(17, b"\\x00ff").unwrap(), [0, 255]);
        assert_eq!(
            text_to_binary(2950, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap()[..3],
            [0xa0, 0xee, 0xbc]
        );
        assert_eq!(
            text_to_binary(1114, b"2000-01-01 00:00:01").unwrap(),
            1_000_000i64.to_be_bytes()
        );
        assert_eq!(
            text_to_binary(1082, b"2000-01-03").unwrap(),
            2i32.to_be_bytes()
        );
        assert_eq!(text_to_binary(1186, b"1 day"), None);
    }
}
