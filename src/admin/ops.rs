//! The console's control commands that need more than a flag: PAUSE (hold new checkouts, then
//! wait until the paused shards' server connections are all back in their pools), RESUME and
//! KILL_CLIENT. Reads pool status only; never takes or closes a server connection itself.

use std::time::Duration;

use super::command::AdminError;
use super::views;
use crate::shared::Shared;

/// How often PAUSE looks whether the transactions in flight have ended.
const PAUSE_POLL: Duration = Duration::from_millis(10);

/// PAUSE [shard]: new checkouts of the shard's (every shard's) connections wait until RESUME;
/// returns once no connection of those shards is held by a client (transactions in flight
/// ended). Waits as long as that takes, as PgBouncer's PAUSE does.
pub async fn pause(shared: &Shared, shard: Option<&str>) -> Result<(), AdminError> {
    check_shard(shared, shard)?;
    shared.control.pause(shard);
    loop {
        let busy: usize = views::pools(shared)
            .iter()
            .filter(|view| shard.is_none_or(|s| s == view.shard))
            .map(|view| view.status().in_use)
            .sum();
        if busy == 0 {
            return Ok(());
        }
        tokio::time::sleep(PAUSE_POLL).await;
    }
}

/// RESUME [shard]: checkouts held by PAUSE go on.
pub fn resume(shared: &Shared, shard: Option<&str>) -> Result<(), AdminError> {
    check_shard(shared, shard)?;
    shared.control.resume(shard);
    Ok(())
}

/// KILL_CLIENT id: the client's session ends (a transaction it had open is rolled back with its
/// server connection, which is closed rather than reused).
pub fn kill_client(shared: &Shared, id: i32) -> Result<(), AdminError> {
    let client = shared
        .stats
        .clients
        .get(id)
        .ok_or(AdminError::UnknownClient(id))?;
    client.kill();
    Ok(())
}

fn check_shard(shared: &Shared, shard: Option<&str>) -> Result<(), AdminError> {
    match shard {
        Some(name) if !shared.shards.iter().any(|s| s.name == name) => {
            Err(AdminError::UnknownShard(name.to_string()))
        }
        _ => Ok(()),
    }
}
