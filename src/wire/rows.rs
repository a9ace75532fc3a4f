//! RowDescription, as far as merging results from several servers needs it: whether two of them
//! describe the same columns. Decodes nothing else of a result.

/// The parts of one RowDescription field that must agree across servers: name, type OID, type
/// size, type modifier and format. (Table OID and column number differ from server to server.)
type Column<'a> = (&'a [u8], &'a [u8]);

fn columns(body: &[u8]) -> Option<Vec<Column<'_>>> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    let count = usize::try_from(i16::from_be_bytes(*count)).ok()?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let end = rest.iter().position(|&b| b == 0)?;
        let name = &rest[..end];
        // After the name: table OID (4), column number (2), type OID (4), size (2), typmod (4), format (2).
        let attrs = rest.get(end + 1..end + 1 + 18)?;
        out.push((name, &attrs[6..]));
        rest = &rest[end + 1 + 18..];
    }
    Some(out)
}

/// Name, type OID and format code of each column of a RowDescription body.
pub fn column_types(body: &[u8]) -> Option<Vec<(String, u32, i16)>> {
    columns(body).map(|cols| {
        cols.into_iter()
            .map(|(name, attrs)| {
                let oid = u32::from_be_bytes([attrs[0], attrs[1], attrs[2], attrs[3]]);
                let format = i16::from_be_bytes([attrs[10], attrs[11]]);
                (String::from_utf8_lossy(name).into_owned(), oid, format)
            })
            .collect()
    })
}

/// Where each column of a RowDescription body comes from: (table OID, column number), both 0
/// for a column that is not a plain table column.
pub fn column_origins(body: &[u8]) -> Option<Vec<(u32, i16)>> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    let count = usize::try_from(i16::from_be_bytes(*count)).ok()?;
    let mut out = Vec::with_capacity(count.min(body.len()));
    for _ in 0..count {
        let end = rest.iter().position(|&b| b == 0)?;
        let attrs = rest.get(end + 1..end + 1 + 18)?;
        let table = u32::from_be_bytes([attrs[0], attrs[1], attrs[2], attrs[3]]);
        out.push((table, i16::from_be_bytes([attrs[4], attrs[5]])));
        rest = &rest[end + 1 + 18..];
    }
    Some(out)
}

/// Field `index` of a DataRow body: `Some(None)` for NULL, `None` when the row has no such field.
pub fn data_row_field(body: &[u8], index: usize) -> Option<Option<&[u8]>> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    if index >= usize::try_from(i16::from_be_bytes(*count)).ok()? {
        return None;
    }
    for i in 0..=index {
        let (len, after) = rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        let Ok(len) = usize::try_from(len) else {
            if i == index {
                return Some(None);
            }
            rest = after;
            continue;
        };
        let value = after.get(..len)?;
        if i == index {
            return Some(Some(value));
        }
        rest = &after[len..];
    }
    None
}

/// Each field of a RowDescription body as sent (name, NUL, then 18 bytes of attributes).
pub fn description_fields(body: &[u8]) -> Option<Vec<&[u8]>> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    let count = usize::try_from(i16::from_be_bytes(*count)).ok()?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let end = rest.iter().position(|&b| b == 0)? + 1 + 18;
        out.push(rest.get(..end)?);
        rest = &rest[end..];
    }
    Some(out)
}

/// A RowDescription field (from [`description_fields`]) with another type: OID, size and
/// type modifier replaced (table OID and column number cleared, as for a computed column).
pub fn retyped_field(field: &[u8], oid: u32, size: i16, typmod: i32) -> Option<Vec<u8>> {
    let name_end = field.iter().position(|&b| b == 0)? + 1;
    let mut out = field.get(..name_end)?.to_vec();
    let format = field.get(name_end + 16..name_end + 18)?;
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&oid.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&typmod.to_be_bytes());
    out.extend_from_slice(format);
    Some(out)
}

/// A RowDescription field (from [`description_fields`]) with another format code.
pub fn with_format(field: &[u8], format: i16) -> Vec<u8> {
    let mut out = field.to_vec();
    let at = out.len().saturating_sub(2);
    out[at..].copy_from_slice(&format.to_be_bytes());
    out
}

/// Every field of a DataRow body (`None` for NULL).
pub fn data_row_fields(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    let count = usize::try_from(i16::from_be_bytes(*count)).ok()?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, after) = rest.split_first_chunk::<4>()?;
        match usize::try_from(i32::from_be_bytes(*len)) {
            Ok(len) => {
                out.push(Some(after.get(..len)?));
                rest = &after[len..];
            }
            Err(_) => {
                out.push(None);
                rest = after;
            }
        }
    }
    Some(out)
}

/// Whether two RowDescription bodies describe the same columns (names, types and formats).
pub fn same_columns(a: &[u8], b: &[u8]) -> bool {
    match (columns(a), columns(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(name: &str, table_oid: u32, type_oid: u32) -> Vec<u8> {
        let mut v = 1i16.to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        v.extend_from_slice(&table_oid.to_be_bytes());
        v.extend_from_slice(&1i16.to_be_bytes());
        v.extend_from_slice(&type_oid.to_be_bytes());
        v.extend_from_slice(&8i16.to_be_bytes());
        v.extend_from_slice(&(-1i32).to_be_bytes());
        v.extend_from_slice(&0i16.to_be_bytes());
        v
    }

    #[test]
    fn columns_agree_across_servers_whatever_their_table_oids() {
        assert!(same_columns(
            &describe("id", 16384, 20),
            &describe("id", 24576, 20)
        ));
    }

    #[test]
    fn column_types_and_data_row_fields_decode() {
        assert_eq!(
            column_types(&describe("id", 7, 20)),
            Some(vec![("id".to_string(), 20, 0)])
        );
        assert_eq!(column_origins(&describe("id", 7, 20)), Some(vec![(7, 1)]));
        // Two fields: NULL, then "42".
        let row = b"\0\x02\xff\xff\xff\xff\0\0\0\x0242";
        assert_eq!(data_row_field(row, 0), Some(None));
        assert_eq!(data_row_field(row, 1), Some(Some(&b"42"[..])));
        assert_eq!(data_row_field(row, 2), None);
    }

    #[test]
    fn a_different_type_or_name_disagrees() {
        assert!(!same_columns(
            &describe("id", 1, 20),
            &describe("id", 1, 23)
        ));
        assert!(!same_columns(
            &describe("id", 1, 20),
            &describe("key", 1, 20)
        ));
        assert!(!same_columns(&describe("id", 1, 20), b"\0\x01id"));
    }
}
