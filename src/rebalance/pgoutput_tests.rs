//! Decoding messages captured from PostgreSQL 15 (`pg_logical_slot_peek_binary_changes` with
//! `proto_version 1`, `messages true`) for `CREATE TABLE t (id bigint PRIMARY KEY, k bigint,
//! v text, big text)`.

use super::*;

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

#[test]
fn begin_and_commit() {
    assert_eq!(
        decode(&hex("42000000000152bee0000304d12611f784000002d5")).unwrap(),
        Message::Begin {
            final_lsn: 0x152_BEE0,
            xid: 725
        }
    );
    assert_eq!(
        decode(&hex("4300000000000152bee0000000000152bf10000304d12611f784")).unwrap(),
        Message::Commit {
            commit_lsn: 0x152_BEE0,
            end_lsn: 0x152_BF10
        }
    );
}

#[test]
fn relation_names_its_columns_and_key() {
    let bytes = hex(
        "52000040007075626c69630074006400040169640000000014ffffffff006b0000000014ffffffff\
         00760000000019ffffffff006269670000000019ffffffff",
    );
    let Message::Relation(rel) = decode(&bytes).unwrap() else {
        panic!("not a relation");
    };
    assert_eq!(
        (rel.id, rel.namespace.as_str(), rel.name.as_str()),
        (16384, "public", "t")
    );
    let cols: Vec<(&str, bool, u32)> = rel
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.key, c.type_oid))
        .collect();
    assert_eq!(
        cols,
        [
            ("id", true, 20),
            ("k", false, 20),
            ("v", false, 25),
            ("big", false, 25)
        ]
    );
}

#[test]
fn insert_carries_the_new_row_as_text() {
    let bytes = hex("49000040004e0004740000000131740000000137740000000161740000000178");
    assert_eq!(
        decode(&bytes).unwrap(),
        Message::Insert {
            relation: 16384,
            new: vec![text("1"), text("7"), text("a"), text("x")]
        }
    );
}

#[test]
fn update_marks_an_unchanged_toasted_value() {
    let bytes = hex("55000040004e000474000000013274000000013874000000016275");
    assert_eq!(
        decode(&bytes).unwrap(),
        Message::Update {
            relation: 16384,
            old: None,
            new: vec![text("2"), text("8"), text("b"), Value::Unchanged]
        }
    );
}

#[test]
fn update_of_the_primary_key_carries_the_old_key() {
    let bytes = hex(
        "55000040004b00047400000001316e6e6e4e0004740000000133740000000137740000000161740000000178",
    );
    assert_eq!(
        decode(&bytes).unwrap(),
        Message::Update {
            relation: 16384,
            old: Some(vec![text("1"), Value::Null, Value::Null, Value::Null]),
            new: vec![text("3"), text("7"), text("a"), text("x")]
        }
    );
}

#[test]
fn delete_carries_the_key_only() {
    assert_eq!(
        decode(&hex("44000040004b00047400000001336e6e6e")).unwrap(),
        Message::Delete {
            relation: 16384,
            old: vec![text("3"), Value::Null, Value::Null, Value::Null]
        }
    );
}

#[test]
fn logical_message_and_truncate() {
    assert_eq!(
        decode(&hex("4d01000000000152c1287067736861726400000000026862")).unwrap(),
        Message::Logical {
            transactional: true,
            prefix: "pgshard".to_string(),
            content: b"hb".to_vec()
        }
    );
    assert_eq!(
        decode(&hex("54000000010000004000")).unwrap(),
        Message::Truncate {
            relations: vec![16384]
        }
    );
}

#[test]
fn a_cut_message_is_an_error_not_a_panic() {
    let whole = hex("49000040004e0004740000000131740000000137740000000161740000000178");
    for len in 0..whole.len() {
        assert!(decode(&whole[..len]).is_err(), "length {len}");
    }
    let mut huge = hex("49000040004e00017400000000");
    huge[10] = 0x7f; // a value claiming about 2 GB
    assert!(decode(&huge).is_err());
}
