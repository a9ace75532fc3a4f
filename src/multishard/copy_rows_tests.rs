//! Tests of the COPY row splitter: text and CSV rows cut at any byte, keys read, errors named.

use super::*;

const BIG: usize = 1 << 20;

fn text(key_index: usize) -> RowSplitter {
    RowSplitter::new(CopyFormat::new(false, key_index), BIG)
}

fn csv(key_index: usize) -> RowSplitter {
    RowSplitter::new(CopyFormat::new(true, key_index), BIG)
}

/// Feeds `data` in one piece and then finishes; returns every row.
fn all_rows(mut s: RowSplitter, data: &[u8]) -> Vec<CopyRow> {
    s.push(data);
    drain(&mut s, true)
}

fn drain(s: &mut RowSplitter, finish: bool) -> Vec<CopyRow> {
    let mut rows = Vec::new();
    while let Some(row) = s.next_row().unwrap() {
        rows.push(row);
    }
    if finish {
        while let Some(row) = s.finish().unwrap() {
            rows.push(row);
        }
    }
    rows
}

fn keys(rows: &[CopyRow]) -> Vec<Option<String>> {
    rows.iter()
        .filter_map(|r| match r {
            CopyRow::Data { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

#[test]
fn text_rows_split_on_newlines_and_the_key_field_is_picked_by_position() {
    let rows = all_rows(text(1), b"a\t1\nb\t2\n");
    assert_eq!(keys(&rows), vec![some("1"), some("2")]);
    assert_eq!(
        rows[0],
        CopyRow::Data {
            bytes: Bytes::from_static(b"a\t1\n"),
            key: some("1")
        }
    );
}

#[test]
fn text_null_marker_is_a_null_key_but_an_escaped_backslash_n_is_text() {
    let rows = all_rows(text(0), b"\\N\tx\n\\\\N\ty\n");
    assert_eq!(keys(&rows), vec![None, some("\\N")]);
}

#[test]
fn text_escapes_are_decoded_in_the_key() {
    let rows = all_rows(text(0), b"a\\tb\\\\c\\x41\\101\\n\tz\n");
    assert_eq!(keys(&rows), vec![some("a\tb\\cAA\n")]);
}

#[test]
fn text_escaped_delimiter_does_not_split_fields() {
    let rows = all_rows(text(1), b"a\\\tb\tkey\n");
    assert_eq!(keys(&rows), vec![some("key")]);
}

#[test]
fn text_backslash_newline_is_data_not_a_row_end() {
    let rows = all_rows(text(1), b"line1\\\nline2\t7\n");
    assert_eq!(rows.len(), 1);
    assert_eq!(keys(&rows), vec![some("7")]);
}

#[test]
fn text_end_marker_stops_the_data() {
    let rows = all_rows(text(0), b"1\n\\.\n2\n");
    assert_eq!(keys(&rows), vec![some("1")]);
    assert_eq!(rows.last(), Some(&CopyRow::End));
}

#[test]
fn text_end_marker_without_newline_at_the_end() {
    let rows = all_rows(text(0), b"1\n\\.");
    assert_eq!(rows.last(), Some(&CopyRow::End));
    assert_eq!(keys(&rows), vec![some("1")]);
}

#[test]
fn crlf_line_ends_are_not_part_of_the_key() {
    let rows = all_rows(text(1), b"a\t1\r\nb\t2\r\n");
    assert_eq!(keys(&rows), vec![some("1"), some("2")]);
    let rows = all_rows(csv(1), b"a,1\r\nb,\"2\"\r\n");
    assert_eq!(keys(&rows), vec![some("1"), some("2")]);
}

#[test]
fn last_row_without_a_line_end_is_a_row_at_finish() {
    let mut s = text(0);
    s.push(b"1\n2");
    assert_eq!(keys(&drain(&mut s, false)), vec![some("1")]);
    assert_eq!(keys(&drain(&mut s, true)), vec![some("2")]);
}

#[test]
fn a_row_with_too_few_fields_is_bad_copy_file_format() {
    let mut s = text(2);
    s.push(b"a\tb\n");
    let err = s.next_row().unwrap_err();
    assert_eq!(
        err,
        CopyRowError::MissingKey {
            line: 1,
            fields: 2,
            wanted: 3
        }
    );
    assert_eq!(err.sqlstate(), "22P04");
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn csv_quoted_fields_keep_delimiters_newlines_and_doubled_quotes() {
    let data = b"\"a,b\",\"x\ny\",\"say \"\"hi\"\"\"\n2,3,4\n";
    let rows = all_rows(csv(2), data);
    assert_eq!(keys(&rows), vec![some("say \"hi\""), some("4")]);
    let rows = all_rows(csv(1), data);
    assert_eq!(keys(&rows), vec![some("x\ny"), some("3")]);
}

#[test]
fn csv_empty_unquoted_is_null_but_quoted_empty_is_a_value() {
    let rows = all_rows(csv(0), b",a\n\"\",b\n");
    assert_eq!(keys(&rows), vec![None, some("")]);
}

#[test]
fn csv_force_not_null_and_force_null_change_what_is_null() {
    let mut f = CopyFormat::new(true, 0);
    f.force_not_null = true;
    assert_eq!(
        keys(&all_rows(RowSplitter::new(f, BIG), b",a\n")),
        vec![some("")]
    );
    let mut f = CopyFormat::new(true, 0);
    f.null = Box::from(&b"NULL"[..]);
    f.force_null = true;
    assert_eq!(
        keys(&all_rows(RowSplitter::new(f, BIG), b"\"NULL\",a\nNULL,b\n")),
        vec![None, None]
    );
}

#[test]
fn csv_with_a_separate_escape_character() {
    let mut f = CopyFormat::new(true, 1);
    f.escape = b'\\';
    let rows = all_rows(RowSplitter::new(f, BIG), b"\"a\\\"\n,b\",\"k\\\\\"\n");
    assert_eq!(rows.len(), 1);
    assert_eq!(keys(&rows), vec![some("k\\")]);
}

#[test]
fn csv_custom_delimiter_and_quote() {
    let mut f = CopyFormat::new(true, 1);
    f.delimiter = b'|';
    f.quote = b'\'';
    f.escape = b'\'';
    let rows = all_rows(RowSplitter::new(f, BIG), b"'a|b'|'it''s'\n");
    assert_eq!(keys(&rows), vec![some("it's")]);
}

#[test]
fn csv_header_is_its_own_row_and_not_routed() {
    let mut f = CopyFormat::new(true, 0);
    f.header = true;
    let rows = all_rows(RowSplitter::new(f, BIG), b"id,name\n1,a\n");
    assert_eq!(rows[0], CopyRow::Header(Bytes::from_static(b"id,name\n")));
    assert_eq!(keys(&rows), vec![some("1")]);
}

#[test]
fn csv_unterminated_quote_at_the_end_is_an_error() {
    let mut s = csv(0);
    s.push(b"1,a\n\"2,b\n");
    assert_eq!(keys(&drain(&mut s, false)), vec![some("1")]);
    assert_eq!(
        s.finish().unwrap_err(),
        CopyRowError::UnterminatedQuote { line: 2 }
    );
}

#[test]
fn csv_end_marker_alone_on_a_line() {
    let rows = all_rows(csv(0), b"1\n\\.\n");
    assert_eq!(rows.last(), Some(&CopyRow::End));
}

#[test]
fn utf8_keys_survive_and_invalid_utf8_is_refused() {
    let rows = all_rows(text(0), "ключ\tx\n".as_bytes());
    assert_eq!(keys(&rows), vec![some("ключ")]);
    let mut s = text(0);
    s.push(b"\xff\xfe\tx\n");
    assert_eq!(
        s.next_row().unwrap_err(),
        CopyRowError::KeyNotUtf8 { line: 1 }
    );
}

#[test]
fn a_row_longer_than_the_limit_is_refused() {
    let mut s = RowSplitter::new(CopyFormat::new(false, 0), 8);
    s.push(b"0123456789");
    assert!(matches!(
        s.next_row(),
        Err(CopyRowError::RowTooLong { line: 1, .. })
    ));
}

/// The same rows, whatever the CopyData boundaries: every split point, byte by byte.
#[test]
fn rows_split_across_copy_data_boundaries_come_out_the_same() {
    let cases: Vec<(RowSplitter, &[u8])> = vec![
        (
            text(1),
            b"a\\\nb\t1\r\nc\\\\\t\\x32\n\\N\t3\nd\t\\N\n\\.\nignored\n",
        ),
        (
            csv(1),
            "\"q,\"\"\n\",1\r\nx,\"2\"\"\"\nй,\"ключ\"\n,\n\\.\n".as_bytes(),
        ),
    ];
    for (template, data) in cases {
        let expected = all_rows(RowSplitter::new(template.format.clone(), BIG), data);
        // Byte by byte.
        let mut s = RowSplitter::new(template.format.clone(), BIG);
        let mut rows = Vec::new();
        for b in data {
            s.push(std::slice::from_ref(b));
            rows.extend(drain(&mut s, false));
        }
        rows.extend(drain(&mut s, true));
        assert_eq!(rows, expected);
        // Every two-piece split.
        for cut in 0..=data.len() {
            let mut s = RowSplitter::new(template.format.clone(), BIG);
            s.push(&data[..cut]);
            let mut rows = drain(&mut s, false);
            s.push(&data[cut..]);
            rows.extend(drain(&mut s, true));
            assert_eq!(rows, expected, "cut at {cut}");
        }
    }
}

#[test]
fn the_split_case_has_the_expected_keys() {
    let rows = all_rows(
        text(1),
        b"a\\\nb\t1\r\nc\\\\\t\\x32\n\\N\t3\nd\t\\N\n\\.\nignored\n",
    );
    assert_eq!(keys(&rows), vec![some("1"), some("2"), some("3"), None]);
    let rows = all_rows(
        csv(1),
        "\"q,\"\"\n\",1\r\nx,\"2\"\"\"\nй,\"ключ\"\n,\n\\.\n".as_bytes(),
    );
    assert_eq!(
        keys(&rows),
        vec![some("1"), some("2\""), some("ключ"), None]
    );
}
