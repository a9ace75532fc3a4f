//! The client's server-session state that pgshard keeps for it across server connections: the
//! settings every connection serving it must have (its startup values, then whatever its SETs,
//! RESETs, `SET ROLE` and `SET SESSION AUTHORIZATION` left), and why it is pinned to one server
//! connection when it holds state that cannot move (temporary objects, cursors WITH HOLD, SQL
//! `PREPARE`, LISTEN, session advisory locks). Learned from the server itself after any request
//! that may have changed it (one round trip, only then); never guesses a setting's value.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::settings::{self, Settings};
use crate::backend::catalog::quote_literal;
use crate::router::{self, Router};

/// What running a statement may do to the server session, read from its text once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects {
    /// It may change settings, role or session state unseen by its CommandComplete tag.
    pub changes: bool,
    /// It may change settings themselves (`set_config`, `DO`, `CALL`), not only the role or
    /// state that pins: the read-back then reads every setting.
    pub settings: bool,
    /// It is a lone `SET LOCAL` / `SET TRANSACTION`: its `SET` tag changes nothing that lasts.
    pub local: bool,
    /// It leaves state no other server connection can have (for `session_state = "refuse"`).
    pub refused: Option<&'static str>,
}

impl Effects {
    pub const NONE: Effects = Effects {
        changes: false,
        settings: false,
        local: false,
        refused: None,
    };

    /// Reads `sql`'s effects; with `refuse`, also what would pin the client. Placeholder
    /// settings it names are added to `state`'s.
    pub fn of(sql: &str, router: &Router, refuse: bool, state: &mut SessionState) -> Effects {
        let text = router.text_effects(sql);
        if text.sets || text.changes {
            state.custom.extend(router::placeholder_settings(sql));
        }
        Effects {
            changes: text.changes,
            settings: text.settings,
            local: text.local,
            refused: refuse
                .then(|| router::session_state_statement(sql))
                .flatten(),
        }
    }
}

/// Why a client holds on to its server connection: the kinds of state found on it.
pub type PinReason = String;

/// See the module doc.
#[derive(Debug, Default)]
pub struct SessionState {
    /// What the client's StartupMessage asked for: where `RESET` and `DISCARD ALL` go back to
    /// (shared with the clients that asked for the same, [`settings::StartupSets`]).
    startup: Arc<Settings>,
    /// What every server connection serving the client must have (lower-case names): the
    /// startup map itself until something changes it (copied on write).
    wanted: Arc<Settings>,
    /// Names of placeholder (dotted, extension or application) settings the client set: the
    /// server lists them nowhere, so they are asked for by name.
    custom: BTreeSet<String>,
    /// What a request since the last read-back may have changed in the server session.
    dirty: Dirty,
    /// A `RESET`, `SET ... TO DEFAULT` or `DISCARD ALL` may have taken a startup value away.
    restore: bool,
    /// The client holds state that cannot move to another server connection, and what.
    pinned: Option<PinReason>,
}

/// What a settle query found on the server.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub settings: Settings,
    pub pinned: Option<PinReason>,
    /// Every setting was read (else only the role, authorization and placeholders).
    pub complete: bool,
}

/// How much of the server session may differ from what was last read from it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dirty {
    #[default]
    Clean,
    /// Its role, placeholders or the state that pins (a function call, DDL).
    State,
    /// Its settings too (a SET, RESET or DISCARD, `set_config`, `DO`, `CALL`).
    Settings,
}

/// Marks the row of a settle answer that carries the pin reasons (no setting has this name).
const PIN_ROW: &str = "";

impl SessionState {
    pub fn new(startup: impl Into<Arc<Settings>>) -> SessionState {
        let startup = startup.into();
        let custom = startup
            .keys()
            .filter(|n| n.contains('.'))
            .cloned()
            .collect();
        SessionState {
            wanted: startup.clone(),
            startup,
            custom,
            dirty: Dirty::Clean,
            restore: false,
            pinned: None,
        }
    }

    /// The settings every server connection serving the client must have.
    pub fn wanted(&self) -> &Arc<Settings> {
        &self.wanted
    }

    /// A setting the server reported changed (ParameterStatus) follows the client at once.
    pub fn follow_report(&mut self, name: &str, value: String) {
        Arc::make_mut(&mut self.wanted).insert(settings::canonical(name), value);
    }

    /// A request may have changed the server session: its role or state that pins (`settings`
    /// false), or its settings too; `resets`: it may have reset settings (a SET, RESET or
    /// DISCARD, or code that runs them).
    pub fn note_change(&mut self, settings: bool, resets: bool) {
        let dirty = if settings {
            Dirty::Settings
        } else {
            Dirty::State
        };
        self.dirty = self.dirty.max(dirty);
        self.restore |= resets && !self.startup.is_empty();
    }

    /// What the server holds may differ from what was last read from it.
    pub fn is_dirty(&self) -> bool {
        self.dirty != Dirty::Clean
    }

    /// Startup values may have to be put back.
    pub fn restore_due(&self) -> bool {
        self.restore
    }

    /// The client's transactions are SERIALIZABLE unless it says otherwise: a standby refuses
    /// those, so its reads go to the primary, as they would on PostgreSQL.
    pub fn serializable_by_default(&self) -> bool {
        self.wanted
            .get("default_transaction_isolation")
            .is_some_and(|level| {
                level
                    .trim_matches('\'')
                    .eq_ignore_ascii_case("serializable")
            })
    }

    pub fn pinned(&self) -> Option<&str> {
        self.pinned.as_deref()
    }

    /// The query that puts back the startup values a `RESET`, `SET ... TO DEFAULT` or `DISCARD
    /// ALL` took to the server's default (the server's own RESET goes there: its session began
    /// with pgshard's parameters, not the client's), and with `capture`, reads what the session
    /// holds now (settings at session level, role, authorization, placeholders the client set,
    /// and the state that pins). One simple query, one round trip.
    pub fn settle_query(&self, capture: bool) -> String {
        if !self.restore && !capture {
            return String::new();
        }
        let mut sql = String::new();
        let all = capture && self.dirty == Dirty::Settings;
        if all {
            // Read first, by a statement cheap enough to finish within any timeout (kept
            // unless it is PostgreSQL's default, 0).
            sql.push_str(
                "SELECT 'statement_timeout', pg_catalog.current_setting('statement_timeout') \
                 WHERE pg_catalog.current_setting('statement_timeout') <> '0';",
            );
        }
        // The rest runs with no statement timeout, whatever the client set (`SET LOCAL` in the
        // query's implicit transaction: settles run only outside the client's transactions).
        sql.push_str("SET LOCAL statement_timeout = 0;");
        if self.restore {
            let values: Vec<String> = self
                .startup
                .iter()
                .map(|(n, v)| format!("({}, {})", quote_literal(n), quote_literal(v)))
                .collect();
            // A setting still at session level was not reset. A placeholder is listed nowhere:
            // it was reset when it is empty. Rows (name, value) of what was put back.
            sql.push_str(&format!(
                "SELECT s.n, pg_catalog.set_config(s.n, s.v, false) FROM (VALUES {}) s(n, v) \
                 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_settings p \
                 WHERE pg_catalog.lower(p.name) = s.n AND p.source = 'session') \
                 AND (pg_catalog.strpos(s.n, '.') = 0 \
                 OR COALESCE(pg_catalog.current_setting(s.n, true), '') = '');",
                values.join(", ")
            ));
        }
        if capture {
            sql.push_str(&self.capture_query(all));
        }
        sql
    }

    /// Reads what the session holds: with `all`, every setting at session level (but
    /// `statement_timeout`, read before, see above), else (a function call, a tag such as
    /// `CREATE TABLE`: settings were not set by the client itself) only who it runs as, the
    /// placeholders and what pins; `pg_settings` costs about a millisecond of server time.
    fn capture_query(&self, all: bool) -> String {
        let mut sql = String::new();
        if all {
            sql.push_str(
                "SELECT pg_catalog.lower(name), setting FROM pg_catalog.pg_settings \
                 WHERE source = 'session' AND name <> 'statement_timeout' UNION ALL ",
            );
        }
        sql.push_str(
            "SELECT 'role', pg_catalog.current_setting('role') \
             UNION ALL SELECT 'session_authorization', \
             pg_catalog.current_setting('session_authorization')",
        );
        if !self.custom.is_empty() {
            let names: Vec<String> = self
                .custom
                .iter()
                .map(|n| format!("({})", quote_literal(n)))
                .collect();
            sql.push_str(&format!(
                " UNION ALL SELECT c.n, pg_catalog.current_setting(c.n, true) FROM (VALUES {}) c(n) \
                 WHERE COALESCE(pg_catalog.current_setting(c.n, true), '') <> ''",
                names.join(", ")
            ));
        }
        sql.push_str(&format!(
            " UNION ALL SELECT {PIN}, pg_catalog.concat_ws(', ', \
             CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_class \
             WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
             OR EXISTS (SELECT FROM pg_catalog.pg_proc \
             WHERE pronamespace = pg_catalog.pg_my_temp_schema()) \
             OR EXISTS (SELECT FROM pg_catalog.pg_type \
             WHERE typnamespace = pg_catalog.pg_my_temp_schema()) THEN 'temporary objects' END, \
             CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_cursors) THEN 'cursors WITH HOLD' END, \
             CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql) \
             THEN 'prepared statements (PREPARE)' END, \
             CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) THEN 'LISTEN' END, \
             CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' \
             AND pid = pg_catalog.pg_backend_pid()) THEN 'advisory locks' END)",
            PIN = quote_literal(PIN_ROW)
        ));
        sql
    }

    /// Reads a capture's rows (name, value): `login_user` is who the server connection logged in
    /// as (an authorization equal to it, or role `none`, is no change).
    pub fn read_capture(&self, rows: &[Vec<Option<String>>], login_user: &str) -> Found {
        let mut found = Found {
            complete: self.dirty == Dirty::Settings,
            ..Found::default()
        };
        if !found.complete {
            // Only part was read: the rest stays as the client wanted it.
            found.settings = Settings::clone(&self.wanted);
            found.settings.retain(|name, _| {
                !["role", "session_authorization"].contains(&name.as_str())
                    && !self.custom.contains(name)
            });
        }
        for row in rows {
            let [Some(name), value] = row.as_slice() else {
                continue;
            };
            let value = value.clone().unwrap_or_default();
            match name.as_str() {
                PIN_ROW => found.pinned = (!value.is_empty()).then_some(value),
                "role" if value == "none" => {}
                "session_authorization" if value == login_user => {}
                _ => {
                    found.settings.insert(name.clone(), value);
                }
            }
        }
        found
    }

    /// The settle query ran: startup values are back; with a capture, what the server holds is
    /// what the client wants now.
    pub fn settled(&mut self, found: Option<Found>) {
        self.restore = false;
        if let Some(found) = found {
            self.wanted = Arc::new(found.settings);
            self.pinned = found.pinned;
            self.dirty = Dirty::Clean;
        }
    }

    /// The state could not be read: the connection stays with the client, as if pinned, since
    /// nobody can tell what it holds.
    pub fn unknown(&mut self) {
        self.dirty = Dirty::Clean;
        self.restore = false;
        self.pinned = Some("session state that could not be read".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, value: &str) -> Vec<Option<String>> {
        vec![Some(name.into()), Some(value.into())]
    }

    fn full() -> SessionState {
        let mut state = SessionState::new(Settings::new());
        state.note_change(true, false);
        state
    }

    #[test]
    fn a_partial_read_back_keeps_the_other_settings() {
        let mut startup = Settings::new();
        startup.insert("datestyle".into(), "ISO".into());
        let mut state = SessionState::new(startup);
        state.note_change(false, false);
        assert!(!state
            .settle_query(true)
            .contains("pg_settings WHERE source"));
        let found = state.read_capture(&[row("role", "r"), row("", "LISTEN")], "app");
        assert!(!found.complete);
        assert_eq!(
            found.settings.get("datestyle").map(String::as_str),
            Some("ISO")
        );
        assert_eq!(found.settings.get("role").map(String::as_str), Some("r"));
        assert_eq!(found.pinned.as_deref(), Some("LISTEN"));
    }

    #[test]
    fn a_capture_becomes_the_wanted_settings_and_the_pin() {
        let rows = vec![
            vec![Some("x".into())], // a restore row: one column
            row("datestyle", "Postgres, MDY"),
            row("role", "none"),
            row("session_authorization", "app"),
            row("myapp.tenant", "42"),
            row("", "temporary objects, LISTEN"),
        ];
        let found = full().read_capture(&rows, "app");
        assert_eq!(
            found.settings.into_iter().collect::<Vec<_>>(),
            vec![
                ("datestyle".to_string(), "Postgres, MDY".to_string()),
                ("myapp.tenant".to_string(), "42".to_string())
            ]
        );
        assert_eq!(found.pinned.as_deref(), Some("temporary objects, LISTEN"));

        let rows = vec![
            row("role", "reader"),
            row("session_authorization", "other"),
            row("", ""),
        ];
        let found = full().read_capture(&rows, "app");
        assert_eq!(
            found.settings.get("role").map(String::as_str),
            Some("reader")
        );
        assert_eq!(
            found
                .settings
                .get("session_authorization")
                .map(String::as_str),
            Some("other")
        );
        assert_eq!(found.pinned, None);
    }

    #[test]
    fn the_settle_query_restores_startup_values_and_asks_for_placeholders() {
        let mut startup = Settings::new();
        startup.insert("datestyle".into(), "Postgres, MDY".into());
        let mut state = SessionState::new(startup);
        assert!(!state.settle_query(false).contains("set_config"));
        state.custom.insert("myapp.tenant".to_string());
        state.note_change(true, true);
        let sql = state.settle_query(true);
        assert!(sql.contains("(E'datestyle', E'Postgres, MDY')"), "{sql}");
        assert!(sql.contains("(E'myapp.tenant')"), "{sql}");
        assert!(state.settle_query(false).ends_with("'') = '');"), "{sql}");
        assert!(state
            .settle_query(false)
            .starts_with("SET LOCAL statement_timeout = 0;"));
        let mut state = SessionState::new(Settings::new());
        state.note_change(true, true);
        assert!(!state.restore_due() && state.settle_query(false).is_empty());
    }
}
