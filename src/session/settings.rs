//! A client's settings: what its StartupMessage asked for (parameters and `options=-c name=value`),
//! and later changes the server reports. Any server connection serving the client is brought to
//! these before the client's statements run.

use std::collections::BTreeMap;

use super::error::{SessionError, Unsupported};

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options"];

/// Settings the server reports with ParameterStatus when they change, and that a client may change
/// itself with SET: these are followed so the next server connection gets them too.
pub const FOLLOWED_REPORTS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
];

/// The settings a client asked for, by name.
pub type Settings = BTreeMap<String, String>;

/// Derives the wanted settings from the startup parameters.
pub fn from_startup(params: &[(String, String)]) -> Result<Settings, SessionError> {
    let mut settings = Settings::new();
    for (name, value) in params {
        match name.as_str() {
            "replication" => return Err(Unsupported::Replication.into()),
            "options" => {
                for (k, v) in parse_options(value)? {
                    insert(&mut settings, k, v)?;
                }
            }
            n if NOT_SETTINGS.contains(&n) || n.starts_with("_pq_.") => {}
            _ => insert(&mut settings, name.clone(), value.clone())?,
        }
    }
    Ok(settings)
}

fn insert(settings: &mut Settings, name: String, value: String) -> Result<(), SessionError> {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !plain {
        return Err(SessionError::BadSettingName(name));
    }
    settings.insert(followed_name(name), value);
    Ok(())
}

/// A followed setting under the name the server reports it by. Setting names are
/// case-insensitive and libpq sends `datestyle` and `timezone` (PGDATESTYLE, PGTZ): kept under
/// that spelling, the startup value would sit next to the reported `DateStyle` and win over a
/// client's later `SET DateStyle` on its next server connection.
fn followed_name(name: String) -> String {
    FOLLOWED_REPORTS
        .iter()
        .find(|f| f.eq_ignore_ascii_case(&name))
        .map_or(name, |f| f.to_string())
}

/// Parses libpq's `options`: `-c name=value` / `-cname=value` / `--name=value`, separated by
/// whitespace, with `\` escaping the next character.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, SessionError> {
    let words = split_words(options);
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        let assignment = if word == "-c" {
            i += 1;
            words.get(i).cloned()
        } else {
            word.strip_prefix("-c")
                .or_else(|| word.strip_prefix("--"))
                .map(|rest| rest.to_string())
        };
        let bad = || SessionError::from(Unsupported::StartupOption { word: word.clone() });
        let assignment = assignment.ok_or_else(bad)?;
        let (name, value) = assignment.split_once('=').ok_or_else(bad)?;
        out.push((name.replace('-', "_"), value.to_string()));
        i += 1;
    }
    Ok(out)
}

fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            c if c.is_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ClientError, SqlState};

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn startup_parameters_and_options_become_settings() {
        let s = from_startup(&params(&[
            ("user", "app"),
            ("database", "app"),
            ("application_name", "psql"),
            ("extra_float_digits", "3"),
            (
                "options",
                "-c statement_timeout=5s --search-path=a,b -cTimeZone=UTC",
            ),
        ]))
        .unwrap();
        assert_eq!(s.get("application_name").map(String::as_str), Some("psql"));
        assert_eq!(s.get("extra_float_digits").map(String::as_str), Some("3"));
        assert_eq!(s.get("statement_timeout").map(String::as_str), Some("5s"));
        assert_eq!(s.get("search_path").map(String::as_str), Some("a,b"));
        assert_eq!(s.get("TimeZone").map(String::as_str), Some("UTC"));
        assert!(!s.contains_key("user"));
    }

    #[test]
    fn followed_settings_take_the_name_the_server_reports() {
        let s = from_startup(&params(&[
            ("datestyle", "Postgres, MDY"),
            ("timezone", "America/Los_Angeles"),
            ("options", "-c intervalstyle=postgres_verbose"),
            ("search_path", "a"),
        ]))
        .unwrap();
        let names: Vec<&str> = s.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["DateStyle", "IntervalStyle", "TimeZone", "search_path"]
        );
    }

    #[test]
    fn escaped_spaces_stay_in_values() {
        let o = parse_options(r"-c application_name=my\ app").unwrap();
        assert_eq!(
            o,
            vec![("application_name".to_string(), "my app".to_string())]
        );
    }

    #[test]
    fn replication_is_refused() {
        let err = from_startup(&params(&[("replication", "database")])).unwrap_err();
        assert_eq!(
            ClientError::from(&err).code,
            SqlState::FEATURE_NOT_SUPPORTED
        );
    }

    #[test]
    fn odd_setting_names_are_refused() {
        let err = from_startup(&params(&[("a;drop table x", "1")])).unwrap_err();
        assert_eq!(ClientError::from(&err).code, SqlState::UNDEFINED_OBJECT);
    }
}
