//! Writes: INSERT by its rows' keys, UPDATE and DELETE by WHERE, reference tables everywhere,
//! keyless writes refused, DDL broadcast.

use super::check;

#[test]
#[rustfmt::skip]
fn inserts_go_to_the_shard_of_their_rows_key() {
    check(&[
        ("INSERT INTO users (user_id, name) VALUES (42, 'a')", "shard 1 primary"),
        ("INSERT INTO users (name, user_id) VALUES ('a', 1)", "shard 0 primary"),
        ("insert into USERS (USER_ID) values ('42')", "shard 1 primary"),
        ("INSERT INTO public.users (user_id) VALUES (42) RETURNING *", "shard 1 primary"),
        ("INSERT INTO users AS u (user_id, name) VALUES (1, 'a') ON CONFLICT (user_id) DO UPDATE SET name = EXCLUDED.name", "shard 0 primary"),
        ("INSERT INTO users (user_id) VALUES (42) ON CONFLICT DO NOTHING RETURNING user_id", "shard 1 primary"),
        ("INSERT INTO users (user_id, email) VALUES (42, 'x') ON CONFLICT (email) DO UPDATE SET user_id = excluded.user_id", "shard 1 primary"),
        ("INSERT INTO users (user_id, name) SELECT 42, 'x'", "shard 1 primary"),
        ("INSERT INTO accounts (email, name) VALUES ('erin', 'Erin')", "shard 1 primary"),
        ("INSERT INTO devices (device_id) VALUES ('550e8400-e29b-41d4-a716-446655440000')", "shard 1 primary"),
        ("INSERT INTO users (user_id, created_at) VALUES (1, now())", "shard 0 primary"),
        ("WITH n AS (INSERT INTO orders (user_id, total) VALUES (42, 1) RETURNING *) SELECT * FROM n", "shard 1 primary"),
    ]);
}

#[test]
#[rustfmt::skip]
fn multi_row_inserts_route_by_whether_rows_share_a_shard() {
    check(&[
        ("INSERT INTO users (user_id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')", "shard 0 primary"),
        ("INSERT INTO users (user_id, name) VALUES (4, 'a'), (42, 'b')", "shard 1 primary"),
        ("INSERT INTO users (user_id, name) VALUES (1, 'a'), (42, 'b')", "split 0,1"),
        ("INSERT INTO accounts (email) VALUES ('alice'), ('carol'), ('bob')", "split 0,1"),
    ]);
}

#[test]
#[rustfmt::skip]
fn inserts_without_a_usable_key_are_refused() {
    check(&[
        ("INSERT INTO users (name) VALUES ('a')", "error 0A000"),
        ("INSERT INTO users VALUES (42, 'a')", "error 0A000"),
        ("INSERT INTO users (user_id) VALUES (nextval('ids'))", "error 0A000"),
        ("INSERT INTO users (user_id) VALUES (1), (DEFAULT)", "error 0A000"),
        ("INSERT INTO users (user_id) SELECT user_id FROM users", "error 0A000"),
        ("INSERT INTO users (user_id) VALUES (NULL)", "error 22004"),
        ("INSERT INTO users (user_id) VALUES ('abc')", "error 22P02"),
        ("INSERT INTO events (user_id) VALUES (3000000000)", "error 22003"),
        ("INSERT INTO users (user_id, email) VALUES (42, 'x') ON CONFLICT (email) DO UPDATE SET user_id = 1", "error 0A000"),
    ]);
}

#[test]
#[rustfmt::skip]
fn updates_and_deletes_route_by_their_where_key() {
    check(&[
        ("UPDATE users SET name = 'x' WHERE user_id = 42", "shard 1 primary"),
        ("UPDATE users u SET name = 'x' WHERE u.user_id = 1 RETURNING u.name", "shard 0 primary"),
        ("UPDATE users SET visits = visits + 1 WHERE user_id = 42 AND active", "shard 1 primary"),
        ("UPDATE users SET name = 'x' WHERE user_id IN (1, 42)", "shards 0,1 primary"),
        ("UPDATE users SET name = 'x' WHERE user_id = 1 OR user_id = 42", "shards 0,1 primary"),
        ("DELETE FROM users WHERE (user_id = 4 OR user_id IN (5, 7)) AND active", "shard 1 primary"),
        ("UPDATE orders SET total = 0 FROM users u WHERE u.user_id = orders.user_id AND u.user_id = 42", "shard 1 primary"),
        ("UPDATE users SET user_id = 4 WHERE user_id = 42", "shard 1 primary"),
        ("DELETE FROM users WHERE user_id = 42", "shard 1 primary"),
        ("DELETE FROM users WHERE user_id = 1 RETURNING *", "shard 0 primary"),
        ("DELETE FROM orders o USING users u WHERE o.user_id = u.user_id AND u.user_id = 1", "shard 0 primary"),
        ("DELETE FROM accounts WHERE email = 'carol'", "shard 1 primary"),
    ]);
}

#[test]
#[rustfmt::skip]
fn keyless_updates_and_deletes_are_refused() {
    check(&[
        ("UPDATE users SET name = 'x'", "error 0A000"),
        ("UPDATE users SET name = 'x' WHERE name = 'y'", "error 0A000"),
        ("UPDATE users SET name = 'x' WHERE user_id = 1 OR name = 'y'", "error 0A000"),
        ("DELETE FROM users", "error 0A000"),
        ("DELETE FROM orders WHERE user_id > 10", "error 0A000"),
        ("UPDATE users SET user_id = 1 WHERE user_id = 42", "error 0A000"),
        ("UPDATE users SET user_id = user_id + 1 WHERE user_id = 42", "error 0A000"),
        ("MERGE INTO users u USING staging s ON s.user_id = u.user_id WHEN MATCHED THEN DELETE", "error 0A000"),
    ]);
}

#[test]
#[rustfmt::skip]
fn reference_table_writes_go_everywhere_and_other_tables_to_the_default_shard() {
    check(&[
        ("INSERT INTO countries (code) VALUES ('fr')", "all"),
        ("UPDATE countries SET name = 'France' WHERE code = 'fr'", "all"),
        ("DELETE FROM public.countries", "all"),
        ("/* pgshard: shard=s1 */ DELETE FROM countries", "shard 1 primary"),
        ("/* pgshard: shard_key=42 */ DELETE FROM countries", "all"),
        ("INSERT INTO settings (k, v) VALUES ('a', 'b')", "shard 0 primary"),
        ("UPDATE settings SET v = 1", "shard 0 primary"),
        ("DELETE FROM settings", "shard 0 primary"),
    ]);
}

#[test]
#[rustfmt::skip]
fn ddl_on_sharded_or_reference_tables_goes_everywhere() {
    check(&[
        ("CREATE TABLE users (user_id bigint PRIMARY KEY)", "all"),
        ("CREATE INDEX ON orders (created_at)", "all"),
        ("ALTER TABLE users ADD COLUMN age int", "all"),
        ("TRUNCATE users", "all"),
        ("DROP TABLE countries", "all"),
        ("CREATE TABLE notes (id int)", "shard 0 primary"),
        ("COPY users (name) FROM STDIN", "error 0A000"),
        ("COPY settings FROM STDIN", "shard 0 primary"),
        ("DO $$ BEGIN PERFORM 1; END $$", "shard 0 primary"),
    ]);
}
