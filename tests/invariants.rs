//! Source-level invariants of how errors reach clients, checked by reading `src/`: the one
//! ErrorResponse encoder is `ClientError::encode` (src/error.rs), and the session takes every
//! SQLSTATE from `SqlState`'s named constants, never from a literal. Reads files only.

use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `path` relative to `src/`, with `/` separators.
fn relative(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("a file under src/");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// 1-based line numbers of `needle` in `text`.
fn lines_with(text: &str, needle: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(i, _)| i + 1)
        .collect()
}

/// String literals in `text` that look like a SQLSTATE: `"` + five digits or capital letters,
/// at least one a digit (so `"BEGIN"` is not one) + `"`. Returns (line, literal).
fn sqlstate_literals(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        for start in 0..bytes.len().saturating_sub(6) {
            let candidate = &bytes[start..start + 7];
            let code = &candidate[1..6];
            if candidate[0] == b'"'
                && candidate[6] == b'"'
                && code
                    .iter()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
                && code.iter().any(|b| b.is_ascii_digit())
            {
                found.push((i + 1, String::from_utf8_lossy(code).into_owned()));
            }
        }
    }
    found
}

#[test]
fn only_client_error_encode_calls_error_response() {
    let mut offenders = Vec::new();
    let mut encoder_calls = 0;
    for path in rust_files(&src()) {
        let name = relative(&path);
        let text = fs::read_to_string(&path).expect("readable source");
        for line in lines_with(&text, "error_response(") {
            let code = text.lines().nth(line - 1).unwrap_or_default();
            match name.as_str() {
                "error.rs" => encoder_calls += 1,
                // The low-level builder's own definition.
                "wire/build.rs" if code.trim_start().starts_with("pub fn error_response(") => {}
                _ => offenders.push(format!("src/{name}:{line}: {}", code.trim())),
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "only ClientError::encode (src/error.rs) may call wire::build::error_response; build a \
         ClientError instead:\n{}",
        offenders.join("\n")
    );
    assert_eq!(
        encoder_calls, 1,
        "src/error.rs should call error_response exactly once, in ClientError::encode"
    );
}

#[test]
fn session_takes_sqlstates_from_named_constants() {
    let mut offenders = Vec::new();
    // The session's own tests (src/session/tests/) assert what a client sees, and their
    // scripted server sends its own codes: literals are what they check against.
    let tests = src().join("session").join("tests");
    for path in rust_files(&src().join("session")) {
        if path.starts_with(&tests) {
            continue;
        }
        let text = fs::read_to_string(&path).expect("readable source");
        for (line, code) in sqlstate_literals(&text) {
            offenders.push(format!("src/{}:{line}: \"{code}\"", relative(&path)));
        }
    }
    assert!(
        offenders.is_empty(),
        "use a SqlState constant (src/error.rs) instead of a literal SQLSTATE:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    // Guards against a scan that silently matches nothing.
    assert_eq!(
        sqlstate_literals(r#"x("0A000", "BEGIN", "53300")"#),
        vec![(1, "0A000".to_string()), (1, "53300".to_string())]
    );
    let error_rs = fs::read_to_string(src().join("error.rs")).expect("src/error.rs");
    assert!(!sqlstate_literals(&error_rs).is_empty());
    assert!(rust_files(&src().join("session")).len() > 5);
}

/// The session runs over `transport::Conn<S>` for any stream (TCP, TLS, an in-memory duplex):
/// no file under src/session names a TCP socket.
#[test]
fn the_session_never_names_a_tcp_stream() {
    // The scripted PostgreSQL server of the session's tests listens on TCP; the session does not.
    let tests = src().join("session").join("tests");
    let offenders: Vec<String> = rust_files(&src().join("session"))
        .iter()
        .filter(|path| !path.starts_with(&tests))
        .flat_map(|path| {
            let text = fs::read_to_string(path).expect("readable source");
            lines_with(&text, "TcpStream")
                .into_iter()
                .map(move |line| format!("{}:{line}", relative(path)))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "TcpStream in the session: {offenders:?}"
    );
}
