//! PostgreSQL's ISO text forms of `date`, `timestamp` and `timestamptz` (DateStyle ISO, the
//! default) read as instants, so rows from several shards can be ordered by them and re-encoded
//! in binary. Pure: no I/O; a text it does not recognise is `None`, never a guess.

/// Microseconds in a day.
const DAY: i128 = 86_400_000_000;
/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch for binary dates and timestamps.
const EPOCH_2000: i64 = 10_957;

/// An instant as microseconds since 2000-01-01 00:00 (UTC for timestamptz); `infinity` and
/// `-infinity` are the extremes.
pub fn parse(text: &[u8], zoned: bool) -> Option<i128> {
    match text {
        b"infinity" => return Some(i128::MAX),
        b"-infinity" => return Some(i128::MIN),
        _ => {}
    }
    let s = std::str::from_utf8(text).ok()?;
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let (date, time) = s.split_once(' ').unwrap_or((s, ""));
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1 {
        return None;
    }
    // BC years count 1 BC as year 0 of the proleptic Gregorian calendar.
    let year = if bc { 1 - year } else { year };
    let days = i128::from(days_from_civil(year, month, day) - EPOCH_2000);
    let (clock, offset) = split_offset(time, zoned)?;
    Some(days * DAY + clock - offset)
}

/// The day count of a `date` (days since 2000-01-01).
pub fn parse_date(text: &[u8]) -> Option<i64> {
    match text {
        b"infinity" => Some(i64::from(i32::MAX)),
        b"-infinity" => Some(i64::from(i32::MIN)),
        _ => parse(text, false).map(|micros| (micros / DAY) as i64),
    }
}

/// Microseconds into the day of `HH:MM:SS[.ffffff]`, and a zone offset `+HH[:MM[:SS]]` after it
/// in microseconds (only when `zoned`).
fn split_offset(time: &str, zoned: bool) -> Option<(i128, i128)> {
    if time.is_empty() {
        return Some((0, 0));
    }
    let at = time.find(['+', '-']);
    let (clock, offset) = match at {
        Some(i) if zoned => (&time[..i], Some(&time[i..])),
        Some(_) => return None,
        None => (time, None),
    };
    let mut fields = clock.splitn(3, ':');
    let hours: i128 = fields.next()?.parse().ok()?;
    let minutes: i128 = fields.next()?.parse().ok()?;
    let seconds = fields.next()?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let whole: i128 = whole.parse().ok()?;
    if fraction.len() > 6 || !fraction.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let micros: i128 = format!("{fraction:0<6}").parse().ok()?;
    let clock = ((hours * 60 + minutes) * 60 + whole) * 1_000_000 + micros;
    let offset = match offset {
        None => 0,
        Some(o) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let mut fields = o[1..].splitn(3, ':');
            let h: i128 = fields.next()?.parse().ok()?;
            let m: i128 = fields.next().map_or(Some(0), |f| f.parse().ok())?;
            let s: i128 = fields.next().map_or(Some(0), |f| f.parse().ok())?;
            sign * ((h * 60 + m) * 60 + s) * 1_000_000
        }
    };
    Some((clock, offset))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_microseconds_since_2000() {
        assert_eq!(parse(b"2000-01-01 00:00:00", false), Some(0));
        assert_eq!(
            parse(b"2000-01-02 00:00:01.5", false),
            Some(DAY + 1_500_000)
        );
        assert_eq!(parse(b"1999-12-31", false), Some(-DAY));
        assert_eq!(parse(b"2000-01-01 00:00:00+01", true), Some(-3_600_000_000));
        assert_eq!(parse(b"2000-01-01 05:30:00+05:30", true), Some(0));
        assert_eq!(
            parse(b"2000-01-01 00:00:00-00:00:30", true),
            Some(30_000_000)
        );
        assert!(parse(b"0001-01-01 00:00:00 BC", false) < parse(b"0001-01-01 00:00:00", false));
        assert!(parse(b"10000-01-01", false) > parse(b"9999-12-31 23:59:59.999999", false));
        assert_eq!(parse(b"infinity", true), Some(i128::MAX));
        assert_eq!(parse(b"01/02/2000", false), None, "not DateStyle ISO");
        assert_eq!(
            parse(b"2000-01-01 00:00:00+01", false),
            None,
            "an offset on a timestamp"
        );
    }

    #[test]
    fn dates_count_days_since_2000() {
        assert_eq!(parse_date(b"2000-03-01"), Some(60));
        assert_eq!(parse_date(b"1970-01-01"), Some(-EPOCH_2000));
        assert_eq!(parse_date(b"-infinity"), Some(i64::from(i32::MIN)));
    }
}
