//! Ordering of result values as PostgreSQL sends them (text format), for merging rows that several
//! shards each returned sorted. Pure: no I/O. Only types whose order pgshard reproduces exactly are
//! supported; for every other type [`SortType::of`] says `None` and the merge is refused.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::collation::{Collator, TextRules};

/// How values of one result column compare.
#[derive(Debug, Clone)]
pub enum SortType {
    /// int2, int4, int8, oid.
    Integer,
    /// float4, float8 (NaN sorts above every number, as in PostgreSQL).
    Float,
    /// numeric, compared as exact decimals (NaN above every number).
    Numeric,
    /// bool: false before true.
    Bool,
    /// uuid: its lowercase hex text orders like its bytes.
    Uuid,
    /// text, varchar, name: under a collation pgshard verified against the shards.
    Text(Arc<Collator>),
    /// date, timestamp (`false`) and timestamptz (`true`) in DateStyle ISO, as instants.
    DateTime(bool),
}

/// What the session knows about how the shards format values, which decides what it can order.
#[derive(Debug, Clone, Default)]
pub struct TypeRules {
    /// How text orders: the verified collations.
    pub text: TextRules,
    /// The shards' connections use DateStyle ISO: dates and timestamps can be read.
    pub iso_dates: bool,
}

impl TypeRules {
    /// These rules with text never ordered, for `why`.
    pub fn without_text(&self, why: &str) -> TypeRules {
        let text = TextRules::new(Err(why.to_string()), Default::default(), None);
        TypeRules {
            text,
            iso_dates: self.iso_dates,
        }
    }

    /// How values of type `oid` compare under these rules (text: an expression's collation);
    /// `None` when pgshard cannot order them.
    pub fn sort_type(&self, oid: u32) -> Option<SortType> {
        self.sort_type_or_why(oid, || self.text.expression(oid))
            .ok()
    }

    /// How values of type `oid` compare, text under the collation `text` gives; `Err` says why
    /// they cannot be ordered (`None` inside: the type is not one pgshard orders).
    pub fn sort_type_or_why(
        &self,
        oid: u32,
        text: impl FnOnce() -> Result<Arc<Collator>, String>,
    ) -> Result<SortType, Option<String>> {
        if is_text(oid) {
            return text().map(SortType::Text).map_err(Some);
        }
        SortType::of(oid)
            .filter(|kind| self.iso_dates || !matches!(kind, SortType::DateTime(_)))
            .ok_or(None)
    }
}

/// text, varchar, name: ordered by a collation.
pub fn is_text(oid: u32) -> bool {
    matches!(oid, 19 | 25 | 1043)
}

impl SortType {
    /// The comparison for a column of type `oid` other than text (see [`TypeRules`]). `None`:
    /// pgshard cannot reproduce PostgreSQL's order for this type.
    pub fn of(oid: u32) -> Option<SortType> {
        match oid {
            20 | 21 | 23 | 26 => Some(SortType::Integer),
            700 | 701 => Some(SortType::Float),
            1700 => Some(SortType::Numeric),
            16 => Some(SortType::Bool),
            2950 => Some(SortType::Uuid),
            1082 | 1114 => Some(SortType::DateTime(false)),
            1184 => Some(SortType::DateTime(true)),
            _ => None,
        }
    }

    /// Compares two non-NULL values in text format.
    pub fn compare(&self, a: &[u8], b: &[u8]) -> Ordering {
        match self {
            SortType::Integer => parse_int(a).cmp(&parse_int(b)),
            SortType::Float => compare_float(parse_float(a), parse_float(b)),
            SortType::Numeric => compare_numeric(a, b),
            SortType::Bool | SortType::Uuid => a.cmp(b),
            SortType::Text(collator) => collator.compare(a, b),
            &SortType::DateTime(zoned) => {
                crate::wire::datetime::parse(a, zoned).cmp(&crate::wire::datetime::parse(b, zoned))
            }
        }
    }
}

fn parse_int(v: &[u8]) -> i64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn parse_float(v: &[u8]) -> f64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

/// PostgreSQL orders NaN above every other value and equal to itself.
fn compare_float(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        // Infallible: neither is NaN.
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// A numeric value's order class: -Infinity < finite < Infinity < NaN.
fn numeric_class(v: &[u8]) -> i8 {
    match v {
        b"-Infinity" => -1,
        b"Infinity" => 1,
        b"NaN" => 2,
        _ => 0,
    }
}

/// Exact comparison of two decimal texts (`-12.340`, `7`, `0.5`).
fn compare_numeric(a: &[u8], b: &[u8]) -> Ordering {
    let (ca, cb) = (numeric_class(a), numeric_class(b));
    if ca != 0 || cb != 0 {
        return ca.cmp(&cb);
    }
    let (neg_a, int_a, frac_a) = split_decimal(a);
    let (neg_b, int_b, frac_b) = split_decimal(b);
    let zero = |int: &[u8], frac: &[u8]| int.is_empty() && frac.is_empty();
    let sign = |neg: bool, z: bool| {
        if z {
            0
        } else if neg {
            -1
        } else {
            1
        }
    };
    let (sa, sb) = (
        sign(neg_a, zero(int_a, frac_a)),
        sign(neg_b, zero(int_b, frac_b)),
    );
    if sa != sb {
        return sa.cmp(&sb);
    }
    let magnitude = int_a
        .len()
        .cmp(&int_b.len())
        .then_with(|| int_a.cmp(int_b))
        .then_with(|| frac_a.cmp(frac_b));
    if sa < 0 {
        magnitude.reverse()
    } else {
        magnitude
    }
}

/// (negative, integer digits without leading zeros, fraction digits without trailing zeros).
fn split_decimal(v: &[u8]) -> (bool, &[u8], &[u8]) {
    let (neg, digits) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, v),
    };
    let (int, frac) = match digits.iter().position(|&c| c == b'.') {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &[][..]),
    };
    let int_start = int.iter().position(|&c| c != b'0').unwrap_or(int.len());
    let frac_end = frac.iter().rposition(|&c| c != b'0').map_or(0, |i| i + 1);
    (neg, &int[int_start..], &frac[..frac_end])
}

/// Adds two decimal texts exactly (`12.5` + `-0.25` = `12.25`), keeping the larger scale, as
/// PostgreSQL's numeric addition does. `None` for NaN/Infinity or more than 38 significant digits.
pub fn add_decimal(a: &[u8], b: &[u8]) -> Option<String> {
    let (ma, sa) = parse_decimal(a)?;
    let (mb, sb) = parse_decimal(b)?;
    let scale = sa.max(sb);
    let widen = |m: i128, s: u32| m.checked_mul(10i128.checked_pow(scale - s)?);
    let sum = widen(ma, sa)?.checked_add(widen(mb, sb)?)?;
    Some(format_decimal(sum, scale))
}

/// A decimal text as (mantissa, scale): `-12.50` is (-1250, 2).
fn parse_decimal(v: &[u8]) -> Option<(i128, u32)> {
    if numeric_class(v) != 0 {
        return None;
    }
    let text = std::str::from_utf8(v).ok()?;
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let scale = u32::try_from(frac.len()).ok()?;
    let digits = format!("{int}{frac}");
    let mantissa: i128 = digits.parse().ok()?;
    Some((mantissa, scale))
}

fn format_decimal(mantissa: i128, scale: u32) -> String {
    let sign = if mantissa < 0 { "-" } else { "" };
    let digits = mantissa.unsigned_abs().to_string();
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// `sum / count` as PostgreSQL's avg() over integers and numerics returns it: numeric division
/// with its result scale (at least 16 significant digits, and no less than the sum's scale),
/// rounded half away from zero. `None` for a malformed or non-finite sum or count; a zero
/// count is NULL, which the caller handles.
pub fn average(sum: &[u8], count: &[u8]) -> Option<String> {
    if numeric_class(sum) != 0 {
        return None;
    }
    let count: u64 = std::str::from_utf8(count).ok()?.parse().ok()?;
    if count == 0 {
        return None;
    }
    let text = std::str::from_utf8(sum).ok()?;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let count_text = count.to_string();
    let (w1, d1) = weight_and_first_digit(int, frac);
    let (w2, d2) = weight_and_first_digit(&count_text, "");
    let mut qweight = w1 - w2;
    if d1 <= d2 {
        qweight -= 1;
    }
    let dscale = i64::try_from(frac.len()).ok()?;
    let rscale = (16 - qweight * 4).max(dscale).clamp(0, 1000);
    // The dividend scaled to an integer at the result's scale, divided digit by digit.
    let padding = usize::try_from(rscale - dscale).ok()?;
    let dividend = int
        .bytes()
        .chain(frac.bytes())
        .chain(std::iter::repeat_n(b'0', padding));
    let mut quotient = Vec::new();
    let mut remainder: u128 = 0;
    for digit in dividend {
        remainder = remainder * 10 + u128::from(digit - b'0');
        let q = remainder / u128::from(count);
        remainder %= u128::from(count);
        if !quotient.is_empty() || q != 0 {
            quotient.push(b'0' + q as u8);
        }
    }
    if remainder * 2 >= u128::from(count) {
        increment(&mut quotient);
    }
    let rscale = usize::try_from(rscale).ok()?;
    let mut digits = String::from_utf8(quotient).ok()?;
    let zero = digits.is_empty();
    if digits.len() <= rscale {
        digits = format!("{digits:0>width$}", width = rscale + 1);
    }
    let (int, frac) = digits.split_at(digits.len() - rscale);
    let sign = if negative && !zero { "-" } else { "" };
    Some(match rscale {
        0 => format!("{sign}{int}"),
        _ => format!("{sign}{int}.{frac}"),
    })
}

/// Adds one to a decimal digit string (empty is zero).
fn increment(digits: &mut Vec<u8>) {
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return;
        }
    }
    digits.insert(0, b'1');
}

/// A decimal's weight and first digit in PostgreSQL's base-10000 numeric representation
/// (`int` without leading zeros): what its division picks the result scale from.
fn weight_and_first_digit(int: &str, frac: &str) -> (i64, u32) {
    if !int.is_empty() {
        let len = int.len() as i64;
        let first_len = ((len - 1) % 4 + 1) as usize;
        return ((len - 1) / 4, int[..first_len].parse().unwrap_or(0));
    }
    let Some(p) = frac.bytes().position(|c| c != b'0') else {
        return (0, 0);
    };
    let group = p / 4;
    let digits: String = frac
        .chars()
        .chain(std::iter::repeat('0'))
        .skip(group * 4)
        .take(4)
        .collect();
    (-(group as i64) - 1, digits.parse().unwrap_or(0))
}

/// A value's text made equal for values PostgreSQL considers equal (numeric `1.50` and `1.5`,
/// float `-0` and `0`), for grouping and DISTINCT; other types are compared as sent.
pub fn canonical(oid: u32, value: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    match oid {
        1700 if numeric_class(value) == 0 => {
            let (negative, int, frac) = split_decimal(value);
            let mut out = Vec::with_capacity(value.len());
            if negative && !(int.is_empty() && frac.is_empty()) {
                out.push(b'-');
            }
            out.extend_from_slice(if int.is_empty() { b"0" } else { int });
            if !frac.is_empty() {
                out.push(b'.');
                out.extend_from_slice(frac);
            }
            Cow::Owned(out)
        }
        700 | 701 if value == b"-0" => Cow::Borrowed(b"0"),
        _ => Cow::Borrowed(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn integers_compare_by_value_not_text() {
        assert_eq!(SortType::Integer.compare(b"9", b"10"), Less);
        assert_eq!(SortType::Integer.compare(b"-5", b"-40"), Greater);
    }

    #[test]
    fn floats_put_nan_last_and_handle_infinities() {
        assert_eq!(SortType::Float.compare(b"NaN", b"Infinity"), Greater);
        assert_eq!(SortType::Float.compare(b"-Infinity", b"-1e300"), Less);
        assert_eq!(SortType::Float.compare(b"1.5", b"1.25"), Greater);
        assert_eq!(SortType::Float.compare(b"NaN", b"NaN"), Equal);
    }

    #[test]
    fn numerics_compare_exactly() {
        let cases: &[(&[u8], &[u8], Ordering)] = &[
            (b"10.5", b"9.75", Greater),
            (b"-10.5", b"-9.75", Less),
            (b"0.10", b"0.1", Equal),
            (b"007", b"7.000", Equal),
            (b"-0.0", b"0", Equal),
            (
                b"123456789012345678901234567890.1",
                b"123456789012345678901234567890.01",
                Greater,
            ),
            (b"NaN", b"Infinity", Greater),
            (b"-Infinity", b"-99999", Less),
            (b"-1", b"0.5", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(
                SortType::Numeric.compare(a, b),
                *want,
                "{} vs {}",
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn decimals_add_exactly_keeping_the_larger_scale() {
        let add = |a: &str, b: &str| add_decimal(a.as_bytes(), b.as_bytes());
        assert_eq!(add("12.5", "-0.25").as_deref(), Some("12.25"));
        assert_eq!(add("1", "2").as_deref(), Some("3"));
        assert_eq!(add("-0.05", "0.01").as_deref(), Some("-0.04"));
        assert_eq!(
            add("99999999999999999999", "1").as_deref(),
            Some("100000000000000000000")
        );
        assert_eq!(add("0.10", "0.2").as_deref(), Some("0.30"));
        assert_eq!(add("NaN", "1"), None);
    }

    #[test]
    fn averages_use_postgresql_division_scale_and_rounding() {
        let avg = |s: &str, c: &str| average(s.as_bytes(), c.as_bytes());
        // Values checked against PostgreSQL 15: SELECT avg(x) FROM (VALUES ...) t(x).
        assert_eq!(avg("3", "2").as_deref(), Some("1.5000000000000000"));
        assert_eq!(avg("10", "4").as_deref(), Some("2.5000000000000000"));
        assert_eq!(avg("2", "3").as_deref(), Some("0.66666666666666666667"));
        assert_eq!(avg("0", "2").as_deref(), Some("0.00000000000000000000"));
        assert_eq!(avg("-2", "3").as_deref(), Some("-0.66666666666666666667"));
        assert_eq!(
            avg("123456789", "2").as_deref(),
            Some("61728394.500000000000")
        );
        assert_eq!(avg("10.50", "3").as_deref(), Some("3.5000000000000000"));
        assert_eq!(avg("1", "0"), None);
        assert_eq!(avg("NaN", "1"), None);
    }

    #[test]
    fn equal_values_get_one_canonical_text() {
        assert_eq!(&*canonical(1700, b"1.50"), b"1.5");
        assert_eq!(&*canonical(1700, b"-0.00"), b"0");
        assert_eq!(&*canonical(1700, b"007.0"), b"7");
        assert_eq!(&*canonical(701, b"-0"), b"0");
        assert_eq!(&*canonical(25, b"1.50"), b"1.50");
    }

    #[test]
    fn text_is_merged_only_under_a_verified_collation() {
        let unknown = TypeRules::default();
        assert!(
            unknown.sort_type(25).is_none(),
            "not before collations are learned"
        );
        let rules = TypeRules {
            text: TextRules::only(Collator::CodePoint),
            iso_dates: false,
        };
        assert!(matches!(rules.sort_type(25), Some(SortType::Text(_))));
        assert!(SortType::of(1186).is_none(), "intervals are not merged");
        assert!(
            rules.sort_type(1114).is_none(),
            "timestamps only under DateStyle ISO"
        );
    }
}
