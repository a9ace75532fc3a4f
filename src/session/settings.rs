//! A client's settings: what its StartupMessage asked for (parameters and `options=-c name=value`),
//! and later changes the server reports. Any server connection serving the client is brought to
//! these before the client's statements run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

/// The settings a client asked for, by [`canonical`] name.
pub type Settings = BTreeMap<String, String>;

/// Startup settings shared by the clients that asked for the same ones (the clients of one
/// application mostly do): each of them holds a pointer, not a map of its own. At most
/// [`SHARED_STARTUP_SETS`] distinct sets are kept; a client with another set keeps its own.
#[derive(Debug, Default)]
pub struct StartupSets(Mutex<Vec<Arc<Settings>>>);

/// Distinct startup settings [`StartupSets`] shares at most.
pub const SHARED_STARTUP_SETS: usize = 64;

impl StartupSets {
    /// The shared copy of `settings` (made shared now if there is room).
    pub fn share(&self, settings: Settings) -> Arc<Settings> {
        let mut sets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = sets.iter().find(|s| ***s == settings) {
            return shared.clone();
        }
        if sets.len() >= SHARED_STARTUP_SETS {
            // Sets no client holds any more make room.
            sets.retain(|s| Arc::strong_count(s) > 1);
        }
        let settings = Arc::new(settings);
        if sets.len() < SHARED_STARTUP_SETS {
            sets.push(settings.clone());
        }
        settings
    }
}

/// Derives the wanted settings from the startup parameters.
pub fn from_startup(params: &[(String, String)]) -> Result<Settings, SessionError> {
    let mut settings = Settings::new();
    // As PostgreSQL does: `options` first, then the other parameters, which win over them.
    for (_, value) in params.iter().filter(|(n, _)| n == "options") {
        for (k, v) in parse_options(value)? {
            insert(&mut settings, k, v)?;
        }
    }
    for (name, value) in params {
        match name.as_str() {
            "replication" => return Err(Unsupported::Replication.into()),
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
    settings.insert(canonical(&name), value);
    Ok(())
}

/// A setting's name as pgshard keys it: PostgreSQL's names are case-insensitive (libpq sends
/// `datestyle` for PGDATESTYLE, the server reports `DateStyle`), so one spelling for both.
pub fn canonical(name: &str) -> String {
    name.to_ascii_lowercase()
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
        assert_eq!(s.get("timezone").map(String::as_str), Some("UTC"));
        assert!(!s.contains_key("user"));
    }

    #[test]
    fn names_are_keyed_in_one_case_whatever_the_client_sent() {
        // libpq sends `datestyle` for PGDATESTYLE; the server reports `DateStyle`: one key.
        let s = from_startup(&params(&[
            ("datestyle", "ISO"),
            ("options", "-c DateStyle=SQL"),
        ]))
        .unwrap();
        assert_eq!(s.len(), 1);
        // A parameter wins over the same setting in `options`, as in PostgreSQL.
        assert_eq!(
            s.get(&canonical("DateStyle")).map(String::as_str),
            Some("ISO")
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
