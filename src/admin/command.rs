//! The admin console's commands: parsed from a simple query's text (case-insensitive, an
//! optional trailing `;`), and why one is refused. Pure: no I/O, no access to `Shared`.

use crate::error::{ClientError, SqlState};

/// What can be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Pools,
    Stats,
    StatsTotals,
    StatsAverages,
    Databases,
    Clients,
    Servers,
    Config,
    Lists,
    Users,
    Version,
    Mem,
    Shards,
    Slots,
    HotSlots,
}

const SHOWS: &[(&str, Show)] = &[
    ("POOLS", Show::Pools),
    ("STATS", Show::Stats),
    ("STATS_TOTALS", Show::StatsTotals),
    ("STATS_AVERAGES", Show::StatsAverages),
    ("DATABASES", Show::Databases),
    ("CLIENTS", Show::Clients),
    ("SERVERS", Show::Servers),
    ("CONFIG", Show::Config),
    ("LISTS", Show::Lists),
    ("USERS", Show::Users),
    ("VERSION", Show::Version),
    ("MEM", Show::Mem),
    ("SHARDS", Show::Shards),
    ("SLOTS", Show::Slots),
    ("HOT_SLOTS", Show::HotSlots),
];

/// A console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    Reload,
    /// Every shard, or the one named.
    Pause(Option<String>),
    Resume(Option<String>),
    Disable,
    Enable,
    KillClient(i32),
    Shutdown,
}

impl Command {
    /// Whether a stats user (SHOW only) may run it.
    pub fn is_show(&self) -> bool {
        matches!(self, Command::Show(_))
    }

    /// The command's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Show(_) => "SHOW",
            Command::Reload => "RELOAD",
            Command::Pause(_) => "PAUSE",
            Command::Resume(_) => "RESUME",
            Command::Disable => "DISABLE",
            Command::Enable => "ENABLE",
            Command::KillClient(_) => "KILL_CLIENT",
            Command::Shutdown => "SHUTDOWN",
        }
    }
}

/// Why a console command was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("unknown admin console command {0:?}")]
    Unknown(String),
    #[error("{command} takes {expected}")]
    BadArgument {
        command: &'static str,
        expected: &'static str,
    },
    #[error("user {user:?} may only run SHOW commands ([admin] stats_users), not {command}")]
    NotAllowed { user: String, command: &'static str },
    #[error("no shard is named {0:?}")]
    UnknownShard(String),
    #[error("no client has id {0}")]
    UnknownClient(i32),
    #[error("the admin console speaks only the simple query protocol")]
    ExtendedProtocol,
    #[error("{0}")]
    Control(#[from] crate::control::ControlError),
}

impl From<&AdminError> for ClientError {
    fn from(e: &AdminError) -> ClientError {
        let (code, hint) = match e {
            AdminError::Unknown(_) | AdminError::BadArgument { .. } => {
                (SqlState::SYNTAX_ERROR, Some(command_list()))
            }
            AdminError::NotAllowed { .. } => (
                SqlState::INSUFFICIENT_PRIVILEGE,
                Some("list the user in [admin] users for full access".to_string()),
            ),
            AdminError::UnknownShard(_) => (
                SqlState::UNDEFINED_OBJECT,
                Some("SHOW SHARDS lists the shards".to_string()),
            ),
            AdminError::UnknownClient(_) => (
                SqlState::UNDEFINED_OBJECT,
                Some("SHOW CLIENTS lists the clients and their ids".to_string()),
            ),
            AdminError::ExtendedProtocol => (
                SqlState::FEATURE_NOT_SUPPORTED,
                Some("send commands as simple queries (psql does)".to_string()),
            ),
            AdminError::Control(_) => (SqlState::CONFIG_FILE_ERROR, None),
        };
        let error = ClientError::new(code, format!("pgshard: {e}"));
        match hint {
            Some(hint) => error.with_hint(hint),
            None => error,
        }
    }
}

/// Every command, for the hint of an unknown one.
fn command_list() -> String {
    let shows: Vec<String> = SHOWS
        .iter()
        .map(|(name, _)| format!("SHOW {name}"))
        .collect();
    format!(
        "commands: {}, RELOAD, PAUSE [shard], RESUME [shard], DISABLE, ENABLE, KILL_CLIENT id, SHUTDOWN",
        shows.join(", ")
    )
}

/// Parses a command. `Ok(None)` for an empty query.
pub fn parse(text: &str) -> Result<Option<Command>, AdminError> {
    let trimmed = text.trim().trim_end_matches(';').trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let verb = words[0].to_ascii_uppercase();
    let args = &words[1..];
    let unknown = || AdminError::Unknown(trimmed.to_string());
    let command = match verb.as_str() {
        "SHOW" => {
            let [what] = args else {
                return Err(AdminError::BadArgument {
                    command: "SHOW",
                    expected: "one of the names listed in the hint",
                });
            };
            let what = what.to_ascii_uppercase();
            let show = SHOWS
                .iter()
                .find(|(name, _)| *name == what)
                .ok_or_else(unknown)?;
            Command::Show(show.1)
        }
        "RELOAD" => no_args(args, Command::Reload, "RELOAD")?,
        "DISABLE" => no_args(args, Command::Disable, "DISABLE")?,
        "ENABLE" => no_args(args, Command::Enable, "ENABLE")?,
        "SHUTDOWN" => no_args(args, Command::Shutdown, "SHUTDOWN")?,
        "PAUSE" => Command::Pause(shard_arg(args, "PAUSE")?),
        "RESUME" => Command::Resume(shard_arg(args, "RESUME")?),
        "KILL_CLIENT" => {
            let id = match args {
                [id] => id.parse().ok(),
                _ => None,
            };
            Command::KillClient(id.ok_or(AdminError::BadArgument {
                command: "KILL_CLIENT",
                expected: "a client id (the id column of SHOW CLIENTS)",
            })?)
        }
        _ => return Err(unknown()),
    };
    Ok(Some(command))
}

fn no_args(args: &[&str], command: Command, name: &'static str) -> Result<Command, AdminError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(AdminError::BadArgument {
            command: name,
            expected: "no argument",
        })
    }
}

fn shard_arg(args: &[&str], name: &'static str) -> Result<Option<String>, AdminError> {
    match args {
        [] => Ok(None),
        [shard] => Ok(Some(shard.trim_matches('"').to_string())),
        _ => Err(AdminError::BadArgument {
            command: name,
            expected: "at most one argument, a shard name",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_case_insensitively_with_an_optional_semicolon() {
        assert_eq!(parse("show pools;"), Ok(Some(Command::Show(Show::Pools))));
        assert_eq!(
            parse("  SHOW Hot_Slots  "),
            Ok(Some(Command::Show(Show::HotSlots)))
        );
        assert_eq!(
            parse("pause s1"),
            Ok(Some(Command::Pause(Some("s1".into()))))
        );
        assert_eq!(parse("RESUME;"), Ok(Some(Command::Resume(None))));
        assert_eq!(parse("kill_client 42"), Ok(Some(Command::KillClient(42))));
        assert_eq!(parse(" ; "), Ok(None));
    }

    #[test]
    fn unknown_commands_are_refused_listing_the_commands() {
        let e = parse("SHOW FDS").unwrap_err();
        assert!(matches!(e, AdminError::Unknown(_)));
        let client = ClientError::from(&e);
        assert_eq!(client.code, SqlState::SYNTAX_ERROR);
        assert!(client.hint.unwrap().contains("SHOW HOT_SLOTS"));
        assert!(matches!(
            parse("KILL_CLIENT x"),
            Err(AdminError::BadArgument { .. })
        ));
        assert!(matches!(
            parse("RELOAD now"),
            Err(AdminError::BadArgument { .. })
        ));
        assert!(matches!(parse("SELECT 1"), Err(AdminError::Unknown(_))));
    }
}
