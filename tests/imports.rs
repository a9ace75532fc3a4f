//! The import rules of ARCHITECTURE.md, checked on the source text: data flows one way.
//!
//! Every `crate::` and `super::` path in `src/` is resolved to the top-level module it names
//! (`use super::super::router::Plan` in `src/multishard/x.rs` names `router`), comments left out,
//! and each rule below lists what a module must never name. Reads files only; starts nothing.

use std::fs;
use std::path::{Path, PathBuf};

/// The crate's top-level modules that do I/O or hold sessions.
const IO: &[&str] = &[
    "session",
    "server",
    "shared",
    "transport",
    "cancel",
    "backend",
    "pool",
    "cli",
    "localpg",
    "metrics",
    "tls",
    "catalog",
];

/// Each module, and the top-level modules it must never import.
fn rules() -> Vec<(&'static str, Vec<&'static str>)> {
    let all = top_level_modules();
    let leaf = |own: &'static str| all.iter().copied().filter(|m| *m != own).collect();
    vec![
        // The cross-shard planning is called by the router and never calls back.
        ("multishard", [IO, &["router"]].concat()),
        ("router", IO.to_vec()),
        // SQL text and trees, and the protocol codec, stand on nothing of the crate.
        ("sql", leaf("sql")),
        ("wire", leaf("wire")),
    ]
}

#[test]
fn modules_import_only_downwards() {
    let mut broken = Vec::new();
    for (module, forbidden) in rules() {
        for file in rust_files(&src().join(module)) {
            let text = fs::read_to_string(&file).expect("read a source file");
            for named in named_modules(&module_path(&file), &strip_comments(&text)) {
                if forbidden.contains(&named.as_str()) {
                    let shown = file.strip_prefix(src()).unwrap_or(&file).display();
                    broken.push(format!("src/{shown} imports {named}"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against ARCHITECTURE.md:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_resolves_relative_paths_and_groups() {
    let path = ["multishard".to_string(), "copy".to_string()];
    let code = "use super::super::router::Plan;\nuse crate::{sql::lexer, session};\n\
                use super::scatter; let x = crate::pool::Pool::new(); // crate::backend";
    assert_eq!(
        named_modules(&path, &strip_comments(code)),
        ["multishard", "pool", "router", "session", "sql"]
    );
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/*.rs` and `src/*/` names, `lib` and `main` aside.
fn top_level_modules() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = fs::read_dir(src())
        .expect("read src/")
        .map(|e| e.expect("a directory entry").path())
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_string();
            (p.is_dir() || p.extension()? == "rs").then_some(name)
        })
        .filter(|n| n != "lib" && n != "main")
        .map(|n| &*Box::leak(n.into_boxed_str()))
        .collect();
    names.sort_unstable();
    names
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// `src/router/tests/mod.rs` → `["router", "tests"]`.
fn module_path(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src()).expect("a file under src/");
    let mut path: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    path
}

/// The code without `//` and `/* */` comments (string contents are kept: none names a path).
fn strip_comments(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find('/') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with("//") {
            rest = &rest[rest.find('\n').unwrap_or(rest.len())..];
        } else if rest.starts_with("/*") {
            rest = &rest[rest.find("*/").map_or(rest.len(), |end| end + 2)..];
        } else {
            out.push('/');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The top-level modules that the `crate::` and `super::` paths in `code` (of the module at
/// `path`) name, sorted.
fn named_modules(path: &[String], code: &str) -> Vec<String> {
    let mut named = Vec::new();
    let starts_word = |at: usize| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    };
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        if !starts_word(at) {
            continue;
        }
        let mut rest = &code[at..];
        let mut base: Vec<String> = path.to_vec();
        if let Some(after) = rest.strip_prefix("crate::") {
            base.clear();
            rest = after;
        }
        while let Some(after) = rest.strip_prefix("super::") {
            base.pop();
            rest = after;
        }
        for first in first_segments(rest) {
            match base.first() {
                Some(top) => named.push(top.clone()),
                None => named.push(first),
            }
        }
    }
    named.sort_unstable();
    named.dedup();
    named
}

/// `router::Plan` → `[router]`; `{sql::lexer, session}` → `[sql, session]`.
fn first_segments(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '*')
            .collect()
    };
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let mut segments = Vec::new();
    let (mut depth, mut item_start) = (0usize, 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                segments.push(ident(&group[item_start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                segments.push(ident(&group[item_start..i]));
                item_start = i + 1;
            }
            _ => {}
        }
    }
    segments.retain(|s| !s.is_empty());
    segments
}
