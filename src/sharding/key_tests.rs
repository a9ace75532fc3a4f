//! Tests of key parsing and key bytes (kept apart from `key.rs` to keep both short).

use super::*;

const UUID: [u8; 16] = [
    0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4, 0xa7, 0x16, 0x44, 0x66, 0x55, 0x44, 0x00, 0x00,
];

fn int(key_type: KeyType, text: &str) -> Result<i64, ShardingError> {
    match key_from_text(key_type, text)? {
        KeyValue::Int(v) => Ok(v),
        other => panic!("{text:?} parsed as {other:?}"),
    }
}

#[test]
fn literal_quoted_literal_and_binary_parameters_hash_the_same() {
    let literal = key_from_text(KeyType::Bigint, "42").unwrap();
    let quoted = key_from_text(KeyType::Bigint, " 42 ").unwrap();
    let int4 = key_from_binary(KeyType::Bigint, &42i32.to_be_bytes()).unwrap();
    let int8 = key_from_binary(KeyType::Bigint, &42i64.to_be_bytes()).unwrap();
    let int2 = key_from_binary(KeyType::Bigint, &42i16.to_be_bytes()).unwrap();
    for key in [&quoted, &int4, &int8, &int2] {
        assert_eq!(key, &literal);
        assert_eq!(key.slot(), 3418);
    }
}

#[test]
fn all_integer_types_hash_as_eight_little_endian_bytes() {
    for key_type in [KeyType::Bigint, KeyType::Integer, KeyType::Smallint] {
        let key = key_from_text(key_type, "-7").unwrap();
        assert_eq!(&*key.key_bytes(), &(-7i64).to_le_bytes(), "{key_type}");
    }
}

#[test]
fn integers_take_a_sign_and_surrounding_whitespace() {
    assert_eq!(int(KeyType::Bigint, "+42"), Ok(42));
    assert_eq!(int(KeyType::Bigint, "-42"), Ok(-42));
    assert_eq!(int(KeyType::Bigint, "\t 42\n"), Ok(42));
    assert_eq!(int(KeyType::Bigint, "007"), Ok(7));
}

#[test]
fn bigint_accepts_its_whole_range() {
    assert_eq!(int(KeyType::Bigint, "9223372036854775807"), Ok(i64::MAX));
    assert_eq!(int(KeyType::Bigint, "-9223372036854775808"), Ok(i64::MIN));
}

#[test]
fn malformed_integer_literals_are_22p02() {
    for bad in [
        "", " ", "abc", "4 2", "42abc", "4.2", "--1", "+", "0x2a", "1e3",
    ] {
        let err = key_from_text(KeyType::Bigint, bad).unwrap_err();
        assert_eq!(err.sqlstate(), "22P02", "{bad:?}");
        assert!(
            matches!(err, ShardingError::InvalidKey { .. }),
            "{bad:?}: {err:?}"
        );
    }
}

#[test]
fn bad_literal_message_names_the_type_the_value_and_the_fix() {
    let msg = key_from_text(KeyType::Bigint, "abc")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("bigint"), "{msg}");
    assert!(msg.contains("\"abc\""), "{msg}");
    assert!(msg.contains("a whole number such as 42"), "{msg}");
}

#[test]
fn integers_outside_the_declared_type_are_out_of_range() {
    let cases = [
        (KeyType::Smallint, "32768"),
        (KeyType::Smallint, "-32769"),
        (KeyType::Integer, "2147483648"),
        (KeyType::Integer, "-2147483649"),
        (KeyType::Bigint, "9223372036854775808"),
        (KeyType::Bigint, "-9223372036854775809"),
    ];
    for (key_type, text) in cases {
        let err = key_from_text(key_type, text).unwrap_err();
        assert_eq!(err.sqlstate(), "22003", "{key_type} {text}");
        assert!(err.to_string().contains(key_type.name()), "{err}");
    }
    assert_eq!(int(KeyType::Smallint, "32767"), Ok(32767));
    assert_eq!(int(KeyType::Integer, "-2147483648"), Ok(-2147483648));
}

#[test]
fn binary_integers_of_any_width_are_range_checked_against_the_declared_type() {
    let big = key_from_binary(KeyType::Smallint, &70000i32.to_be_bytes()).unwrap_err();
    assert_eq!(big.sqlstate(), "22003");
    let fits = key_from_binary(KeyType::Smallint, &7i64.to_be_bytes()).unwrap();
    assert_eq!(fits, KeyValue::Int(7));
}

#[test]
fn binary_integers_of_other_lengths_are_22p03() {
    for len in [0, 1, 3, 5, 16] {
        let err = key_from_binary(KeyType::Bigint, &vec![0; len]).unwrap_err();
        assert_eq!(err.sqlstate(), "22P03", "length {len}");
    }
}

#[test]
fn text_keys_are_taken_as_is() {
    let key = key_from_text(KeyType::Text, " Alice ").unwrap();
    assert_eq!(&*key.key_bytes(), b" Alice ");
    assert_eq!(
        key_from_text(KeyType::Varchar, "alice"),
        key_from_binary(KeyType::Text, b"alice")
    );
}

#[test]
fn binary_text_that_is_not_utf8_is_rejected() {
    let err = key_from_binary(KeyType::Text, &[0xff, 0xfe]).unwrap_err();
    assert_eq!(err.sqlstate(), "22021");
}

#[test]
fn uuids_parse_in_every_form_postgresql_accepts() {
    let forms = [
        "550e8400-e29b-41d4-a716-446655440000",
        "550E8400-E29B-41D4-A716-446655440000",
        "{550e8400-e29b-41d4-a716-446655440000}",
        "550e8400e29b41d4a716446655440000",
        "{550e8400e29b41d4a716446655440000}",
        "550e-8400-e29b-41d4-a716-4466-5544-0000",
    ];
    for form in forms {
        assert_eq!(
            key_from_text(KeyType::Uuid, form),
            Ok(KeyValue::Uuid(UUID)),
            "{form}"
        );
    }
}

#[test]
fn malformed_uuids_are_22p02() {
    let bad = [
        "",
        "550e8400-e29b-41d4-a716-44665544000",
        "550e8400-e29b-41d4-a716-4466554400000",
        "550e8400-e29b-41d4-a716-446655440000-",
        "-550e8400-e29b-41d4-a716-446655440000",
        "550e84-00e29b-41d4-a716-446655440000",
        "550e8400--e29b-41d4-a716-446655440000",
        "{550e8400-e29b-41d4-a716-446655440000",
        "550e8400-e29b-41d4-a716-446655440000}",
        " 550e8400-e29b-41d4-a716-446655440000",
        "g50e8400-e29b-41d4-a716-446655440000",
    ];
    for text in bad {
        let err = key_from_text(KeyType::Uuid, text).unwrap_err();
        assert_eq!(err.sqlstate(), "22P02", "{text:?}");
    }
}

#[test]
fn binary_uuid_is_its_sixteen_bytes() {
    assert_eq!(
        key_from_binary(KeyType::Uuid, &UUID),
        Ok(KeyValue::Uuid(UUID))
    );
    let err = key_from_binary(KeyType::Uuid, &UUID[..15]).unwrap_err();
    assert_eq!(err.sqlstate(), "22P03");
}

#[test]
fn keys_display_as_sql_literals() {
    assert_eq!(KeyValue::Int(-3).to_string(), "-3");
    assert_eq!(KeyValue::Text("o'neil".into()).to_string(), "'o''neil'");
    assert_eq!(
        KeyValue::Uuid(UUID).to_string(),
        "'550e8400-e29b-41d4-a716-446655440000'"
    );
}
