//! The `pgshard check` and `pgshard locate` commands, run as a user would run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pgshard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("pgshard binary runs")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("shard-config")
        .join(name)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn check(path: &Path) -> Output {
    pgshard(&["check", "--config", path.to_str().expect("utf-8 path")])
}

fn locate(config: &str, args: &[&str]) -> Output {
    let path = example(config);
    let mut all = vec!["locate", "--config", path.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    pgshard(&all)
}

#[test]
fn check_accepts_the_one_shard_example() {
    let out = check(&example("example.toml"));
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("127.0.0.1:6432"), "{text}");
    assert!(text.contains("shard s0: slots 0-4095"), "{text}");
    assert!(text.contains("127.0.0.1:5433"), "{text}");
}

#[test]
fn check_accepts_the_two_shard_example() {
    let out = check(&example("two-shards.toml"));
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("shard s0: slots 0-2047"), "{text}");
    assert!(text.contains("shard s1: slots 2048-4095"), "{text}");
    assert!(text.contains("countries"), "{text}");
}

#[test]
fn check_rejects_a_broken_config_naming_the_key() {
    let text = std::fs::read_to_string(example("example.toml"))
        .unwrap()
        .replace("size = 20", "size = 0");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let out = check(file.path());
    assert!(!out.status.success(), "stdout: {}", stdout(&out));
    assert!(stderr(&out).contains("pool.size"), "{}", stderr(&out));
}

#[test]
fn check_rejects_overlapping_slots_naming_them() {
    let text = std::fs::read_to_string(example("two-shards.toml"))
        .unwrap()
        .replace("\"2048-4095\"", "\"2000-4095\"");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let out = check(file.path());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("shards[1].slots"), "{err}");
    assert!(
        err.contains("slots 2000-2047 are owned by both s0 and s1"),
        "{err}"
    );
}

#[test]
fn check_reports_a_missing_file() {
    let out = check(Path::new("/nonexistent/pgshard.toml"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/pgshard.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn locate_places_bigint_42_on_slot_3418_of_shard_s1() {
    let out = locate("two-shards.toml", &["42"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "key 42 (bigint) -> slot 3418 -> shard s1"
    );
}

#[test]
fn locate_places_text_alice_on_slot_1242() {
    let out = locate("two-shards.toml", &["--type", "text", "alice"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("slot 1242"), "{text}");
    assert!(text.contains("shard s0"), "{text}");
}

#[test]
fn locate_takes_negative_keys() {
    let out = locate("two-shards.toml", &["-1"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("slot 1297"), "{}", stdout(&out));
}

#[test]
fn locate_uses_the_table_key_type() {
    let out = locate("two-shards.toml", &["--table", "orders", "42"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("slot 3418"), "{}", stdout(&out));
    let out = locate("two-shards.toml", &["--table", "countries", "42"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("reference table"), "{}", stderr(&out));
}

#[test]
fn locate_rejects_a_bad_literal_with_22p02() {
    let out = locate("two-shards.toml", &["abc"]);
    assert!(!out.status.success(), "stdout: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("22P02"), "{err}");
    assert!(err.contains("bigint") && err.contains("\"abc\""), "{err}");
}

#[test]
fn locate_reads_many_keys_from_stdin() {
    use std::io::Write;
    let path = example("two-shards.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .args(["locate", "--config", path.to_str().unwrap(), "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pgshard binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"42\n-1\n1\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], "42\t3418\ts1");
    assert!(lines[1].starts_with("-1\t1297\t"), "{}", lines[1]);
    // A key that does not parse names its line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .args(["locate", "--config", path.to_str().unwrap(), "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"7\nseven\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
}
