//! Frames as short text, so tests compare what a peer received with one `assert_eq!` on a list
//! of lines: `Q "SELECT 1"`, `P "pgshard_…" "SELECT $1" [20]`, `B "" "s1" ['7']`, `Z I`,
//! `E ERROR 22012`. Strings are Rust-debug quoted; parameter values are `'text'` when printable,
//! `x<hex>` otherwise. A frame that does not decode renders as its tag and hex bytes.

use crate::wire::Frame;

/// A frame a server received (a frontend message).
pub fn client_frame(frame: &Frame) -> String {
    let tag = char::from(frame.tag());
    let mut r = Reader(frame.body());
    let text = match frame.tag() {
        b'Q' => r.cstr().map(|sql| format!("Q {sql:?}")),
        b'P' => parse(&mut r),
        b'B' => bind(&mut r),
        b'D' | b'C' => r
            .byte()
            .zip(r.cstr())
            .map(|(kind, name)| format!("{tag} {} {name:?}", char::from(kind))),
        b'E' => r.cstr().zip(r.i32()).map(|(portal, max)| match max {
            0 => format!("E {portal:?}"),
            max => format!("E {portal:?} {max}"),
        }),
        b'd' => r
            .rest()
            .map(|data| format!("d {:?}", String::from_utf8_lossy(data))),
        b'f' => r.cstr().map(|message| format!("f {message:?}")),
        b'S' | b'H' | b'c' | b'X' if frame.body().is_empty() => Some(tag.to_string()),
        _ => None,
    };
    text.filter(|_| r.0.is_empty())
        .unwrap_or_else(|| format!("{tag} x{}", hex(frame.body())))
}

/// A frame a client received (a backend message).
pub fn server_frame(frame: &Frame) -> String {
    let tag = char::from(frame.tag());
    let mut r = Reader(frame.body());
    let text = match frame.tag() {
        b'E' | b'N' => Some(error_fields(&mut r, tag)),
        b'C' => r.cstr().map(|command| format!("C {command:?}")),
        b'Z' => r.byte().map(|status| format!("Z {}", char::from(status))),
        b'S' => r
            .cstr()
            .zip(r.cstr())
            .map(|(name, value)| format!("S {name}={value}")),
        b'K' => r.i32().zip(r.i32()).map(|_| "K".to_string()),
        b'R' => r.i32().map(|code| format!("R {code}")),
        b'D' => data_row(&mut r),
        b'T' => row_description(&mut r),
        b't' => r.i16().and_then(|n| {
            let oids: Option<Vec<String>> =
                (0..n).map(|_| r.i32().map(|o| o.to_string())).collect();
            oids.map(|oids| format!("t [{}]", oids.join(", ")))
        }),
        // CopyInResponse / CopyOutResponse: format, then one format per column.
        b'G' | b'H' => r.byte().and_then(|_| r.i16()).and_then(|n| {
            (0..n).try_for_each(|_| r.i16().map(drop))?;
            Some(format!("{tag} {n}"))
        }),
        b'd' => r
            .rest()
            .map(|data| format!("d {:?}", String::from_utf8_lossy(data))),
        b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'c' if frame.body().is_empty() => {
            Some(tag.to_string())
        }
        _ => None,
    };
    text.filter(|_| r.0.is_empty())
        .unwrap_or_else(|| format!("{tag} x{}", hex(frame.body())))
}

fn parse(r: &mut Reader<'_>) -> Option<String> {
    let name = r.cstr()?;
    let query = r.cstr()?;
    let n = r.i16()?;
    let types: Option<Vec<String>> = (0..n).map(|_| r.i32().map(|t| t.to_string())).collect();
    let types = types?;
    Some(if types.is_empty() {
        format!("P {name:?} {query:?}")
    } else {
        format!("P {name:?} {query:?} [{}]", types.join(", "))
    })
}

fn bind(r: &mut Reader<'_>) -> Option<String> {
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let formats = r.i16()?;
    (0..formats).try_for_each(|_| r.i16().map(drop))?;
    let n = r.i16()?;
    let values: Option<Vec<String>> = (0..n).map(|_| r.value()).collect();
    let results = r.i16()?;
    (0..results).try_for_each(|_| r.i16().map(drop))?;
    Some(format!(
        "B {portal:?} {statement:?} [{}]",
        values?.join(", ")
    ))
}

fn data_row(r: &mut Reader<'_>) -> Option<String> {
    let n = r.i16()?;
    let values: Option<Vec<String>> = (0..n).map(|_| r.value()).collect();
    Some(format!("D [{}]", values?.join(", ")))
}

fn row_description(r: &mut Reader<'_>) -> Option<String> {
    let n = r.i16()?;
    let mut names = Vec::new();
    for _ in 0..n {
        names.push(r.cstr()?);
        // table oid, column number, type oid, type size, type modifier, format
        r.take(4 + 2 + 4 + 2 + 4 + 2)?;
    }
    Some(format!("T [{}]", names.join(", ")))
}

/// `E <severity> <sqlstate>`: the message is left out (tests match on codes, not wording).
fn error_fields(r: &mut Reader<'_>, tag: char) -> String {
    let (mut severity, mut code) = (String::new(), String::new());
    while let Some(field) = r.byte().filter(|&b| b != 0) {
        let value = r.cstr().unwrap_or_default();
        match field {
            b'S' => severity = value,
            b'C' => code = value,
            _ => {}
        }
    }
    format!("{tag} {severity} {code}")
}

/// A cursor over a message body.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// Everything left.
    fn rest(&mut self) -> Option<&[u8]> {
        self.take(self.0.len())
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn cstr(&mut self) -> Option<String> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let text = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Some(text)
    }

    /// A length-prefixed value: `NULL`, `'text'` when printable, `x<hex>` otherwise.
    fn value(&mut self) -> Option<String> {
        let len = self.i32()?;
        let Ok(len) = usize::try_from(len) else {
            return Some("NULL".into());
        };
        let bytes = self.take(len)?;
        Some(match std::str::from_utf8(bytes) {
            Ok(text) if text.chars().all(|c| !c.is_control()) => format!("'{text}'"),
            _ => format!("x{}", hex(bytes)),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
