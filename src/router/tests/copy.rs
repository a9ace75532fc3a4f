//! COPY plans: the key's position and the data format of `COPY <sharded table> FROM STDIN`,
//! the refusals, and whether `COPY ... TO STDOUT` on several shards may be gathered.

use super::router;
use crate::router::{CopyFormat, CopyIn, CopyOut, CopyPlan, Params, RouteContext};

fn copy_in(sql: &str) -> CopyIn {
    match router().plan(sql).copy() {
        Some(CopyPlan::In(c)) => c.clone(),
        other => panic!("{sql}: expected a COPY IN plan, got {other:?}"),
    }
}

fn refusal(sql: &str) -> String {
    let r = router();
    let plan = r.plan(sql);
    match r.route(&plan, &Params::NONE, &RouteContext::default()) {
        Err(e) => {
            assert_eq!(e.sqlstate(), "0A000", "{sql}: {e}");
            e.to_string()
        }
        Ok(route) => panic!("{sql}: expected a refusal, got {route:?}"),
    }
}

fn gather(sql: &str) -> Result<CopyOut, String> {
    match router().plan(sql).copy() {
        Some(CopyPlan::Out(g)) => g.clone(),
        other => panic!("{sql}: expected a COPY OUT plan, got {other:?}"),
    }
}

#[test]
fn copy_into_a_sharded_table_finds_the_key_in_the_column_list() {
    let c = copy_in("COPY users (name, user_id) FROM STDIN");
    assert_eq!(c.key_index, Some(1));
    assert_eq!(c.format, CopyFormat::new(false, 1));
    assert_eq!(&*c.table.name, "users");
    let c = copy_in("COPY public.users (\"user_id\", name) FROM stdin");
    assert_eq!(c.key_index, Some(0));
}

#[test]
fn without_a_column_list_the_key_position_is_left_to_the_table_order() {
    let c = copy_in("COPY users FROM STDIN");
    assert_eq!(c.key_index, None);
    let resolved = c.with_columns(&["name".into(), "user_id".into()]).unwrap();
    assert_eq!(resolved.key_index, Some(1));
    assert_eq!(resolved.format.key_index, 1);
    let err = c.with_columns(&["name".into()]).unwrap_err();
    assert!(
        err.contains("COPY users (user_id, ...) FROM STDIN"),
        "{err}"
    );
}

#[test]
fn modern_csv_options_are_read() {
    let c = copy_in(
        "COPY accounts (email, name) FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER ';', \
         QUOTE '''', ESCAPE '\\', NULL 'NA', FORCE_NOT_NULL (email))",
    );
    let f = c.format;
    assert!(f.csv && f.header && f.force_not_null && !f.force_null);
    assert_eq!((f.delimiter, f.quote, f.escape), (b';', b'\'', b'\\'));
    assert_eq!(&*f.null, b"NA");
}

#[test]
fn legacy_csv_options_are_read() {
    let c = copy_in("COPY users (user_id, name) FROM STDIN CSV HEADER QUOTE '\"'");
    assert!(c.format.csv && c.format.header);
    let c = copy_in("COPY users (user_id, name) FROM STDIN DELIMITER '|' NULL 'x'");
    assert!(!c.format.csv);
    assert_eq!(c.format.delimiter, b'|');
    assert_eq!(&*c.format.null, b"x");
}

#[test]
fn quote_alone_sets_the_escape_too() {
    let c = copy_in("COPY users (user_id) FROM STDIN (FORMAT csv, QUOTE '|')");
    assert_eq!((c.format.quote, c.format.escape), (b'|', b'|'));
}

#[test]
fn binary_copy_into_a_sharded_table_is_refused() {
    let msg = refusal("COPY users (user_id, name) FROM STDIN (FORMAT binary)");
    assert!(msg.contains("binary"), "{msg}");
    refusal("COPY users (user_id, name) FROM STDIN BINARY");
}

#[test]
fn a_column_list_without_the_key_is_refused() {
    let msg = refusal("COPY users (name) FROM STDIN");
    assert!(msg.contains("user_id"), "{msg}");
}

#[test]
fn copy_from_a_server_file_into_a_sharded_table_is_refused() {
    let msg = refusal("COPY users (user_id) FROM '/tmp/x.csv'");
    assert!(msg.contains("STDIN"), "{msg}");
}

#[test]
fn copy_into_a_sharded_table_with_other_statements_is_refused() {
    refusal("COPY users (user_id) FROM STDIN; SELECT 1");
}

#[test]
fn copy_into_an_unsharded_table_has_no_copy_plan() {
    assert_eq!(router().plan("COPY settings FROM STDIN").copy(), None);
}

#[test]
fn keys_place_rows_as_the_router_does() {
    let c = copy_in("COPY users (user_id) FROM STDIN");
    let r = router();
    assert_eq!(c.shard_of(r.shard_map(), Some("42"), 1), Ok(1));
    assert_eq!(c.shard_of(r.shard_map(), Some(" 1 "), 1), Ok(0));
    let null = c.shard_of(r.shard_map(), None, 7).unwrap_err();
    assert_eq!(null.sqlstate(), "23502");
    assert!(null.to_string().contains("line 7"), "{null}");
    let bad = c.shard_of(r.shard_map(), Some("x"), 3).unwrap_err();
    assert_eq!(bad.sqlstate(), "22P02");
    assert!(bad.to_string().contains("line 3"), "{bad}");
}

#[test]
fn keyless_copy_out_of_a_table_or_plain_query_is_gathered() {
    assert_eq!(
        gather("COPY users TO STDOUT"),
        Ok(CopyOut { header: false })
    );
    assert_eq!(
        gather("COPY (SELECT user_id, name FROM users WHERE name <> '') TO STDOUT WITH (FORMAT csv, HEADER)"),
        Ok(CopyOut { header: true })
    );
}

#[test]
fn copy_out_that_concatenation_cannot_answer_names_the_construct() {
    let err = gather("COPY (SELECT * FROM users ORDER BY user_id) TO STDOUT").unwrap_err();
    assert!(err.contains("ORDER BY"), "{err}");
    let err = gather("COPY (SELECT * FROM users LIMIT 3) TO STDOUT").unwrap_err();
    assert!(err.contains("LIMIT"), "{err}");
    let err = gather("COPY (SELECT count(*) FROM users) TO STDOUT").unwrap_err();
    assert!(err.contains("aggregate"), "{err}");
    let err = gather("COPY (SELECT DISTINCT name FROM users) TO STDOUT").unwrap_err();
    assert!(err.contains("DISTINCT"), "{err}");
    let err = gather("COPY users TO STDOUT (FORMAT binary)").unwrap_err();
    assert!(err.contains("binary"), "{err}");
}

#[test]
fn a_statement_after_copy_from_stdin_is_refused_not_read_as_data() {
    refusal("COPY users (user_id) FROM STDIN; SELECT 1");
    refusal("COPY users (user_id) FROM STDIN;\n1\n\\.\n");
}

#[test]
fn comments_after_copy_from_stdin_are_not_a_statement() {
    assert_eq!(
        copy_in("COPY users (user_id) FROM STDIN; -- rows follow").key_index,
        Some(0)
    );
    assert_eq!(
        copy_in("COPY users (user_id) FROM STDIN -- rows follow").key_index,
        Some(0)
    );
    refusal("COPY users (user_id) FROM STDIN; /* x */ SELECT 1");
}
