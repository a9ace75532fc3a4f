//! The catalog's side of moving slots: routers registering themselves, cutover holds and the
//! routers' acknowledgements, and the move journal (one row per move, its last step done).
//! Tables `pgshard.routers`, `pgshard.holds`, `pgshard.hold_acks` and `pgshard.moves`, created
//! with the map (and added to an older catalog by [`super::open`]). Plain SQL only: it never
//! routes, moves rows or decides when a hold may end.

use std::time::Duration;

use tokio_postgres::GenericClient;

use super::{CatalogError, CHANNEL};

/// Tables added in schema version 2 (idempotent: also run on catalogs made before them).
pub(super) const MOVE_SQL: &str = "\
    CREATE TABLE IF NOT EXISTS pgshard.routers ( \
        router_id text PRIMARY KEY, \
        host text NOT NULL, \
        pid integer NOT NULL, \
        poll_ms integer NOT NULL, \
        lease_ms integer NOT NULL DEFAULT 0, \
        started_at timestamptz NOT NULL DEFAULT now(), \
        seen_at timestamptz NOT NULL DEFAULT now()); \
    CREATE TABLE IF NOT EXISTS pgshard.holds ( \
        move_id text PRIMARY KEY, \
        slots text NOT NULL, \
        requested_at timestamptz NOT NULL DEFAULT now(), \
        expires_at timestamptz NOT NULL, \
        scope text NOT NULL DEFAULT 'slots' CHECK (scope IN ('slots', 'scatter')), \
        sticky boolean NOT NULL DEFAULT false); \
    CREATE TABLE IF NOT EXISTS pgshard.hold_acks ( \
        move_id text NOT NULL, \
        router_id text NOT NULL, \
        acked_at timestamptz NOT NULL DEFAULT now(), \
        readers_drained boolean NOT NULL DEFAULT false, \
        PRIMARY KEY (move_id, router_id)); \
    CREATE TABLE IF NOT EXISTS pgshard.moves ( \
        move_id text PRIMARY KEY, \
        slots text NOT NULL, \
        source text NOT NULL, \
        target text NOT NULL, \
        step text NOT NULL, \
        started_at timestamptz NOT NULL DEFAULT now(), \
        updated_at timestamptz NOT NULL DEFAULT now(), \
        rows_copied bigint NOT NULL DEFAULT 0, \
        bytes_copied bigint NOT NULL DEFAULT 0, \
        copy_seconds double precision NOT NULL DEFAULT 0, \
        changes_applied bigint NOT NULL DEFAULT 0, \
        lag_bytes bigint, \
        attempts integer NOT NULL DEFAULT 0, \
        hold_ms double precision, \
        epoch_after bigint, \
        error text, \
        slice_size integer NOT NULL DEFAULT 0, \
        slices_done integer NOT NULL DEFAULT 0); \
    DO $$ BEGIN \
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'pgshard' \
                       AND table_name = 'moves' AND column_name = 'slice_size') THEN \
            ALTER TABLE pgshard.moves \
                ADD COLUMN slice_size integer NOT NULL DEFAULT 0, \
                ADD COLUMN slices_done integer NOT NULL DEFAULT 0; \
        END IF; \
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'pgshard' \
                       AND table_name = 'holds' AND column_name = 'sticky') THEN \
            ALTER TABLE pgshard.holds ADD COLUMN sticky boolean NOT NULL DEFAULT false; \
        END IF; \
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'pgshard' \
                       AND table_name = 'routers' AND column_name = 'lease_ms') THEN \
            ALTER TABLE pgshard.routers ADD COLUMN lease_ms integer NOT NULL DEFAULT 0; \
        END IF; \
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'pgshard' \
                       AND table_name = 'hold_acks' AND column_name = 'readers_drained') THEN \
            ALTER TABLE pgshard.hold_acks \
                ADD COLUMN readers_drained boolean NOT NULL DEFAULT false; \
        END IF; \
    END $$; \
    CREATE TABLE IF NOT EXISTS pgshard.move_slices ( \
        move_id text NOT NULL, \
        slice integer NOT NULL, \
        slots text NOT NULL, \
        hold_ms double precision NOT NULL, \
        epoch_after bigint NOT NULL, \
        done_at timestamptz NOT NULL DEFAULT now(), \
        PRIMARY KEY (move_id, slice));";

/// What a router reads at each notification and poll, from one snapshot: the map's epoch and
/// the holds in force (an expired hold that never flipped is not in force).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterView {
    pub epoch: u64,
    pub holds: Vec<HeldMove>,
    /// `(move_id, slots)` of the moves not done or aborted: what a router cut off from the
    /// catalog holds (it cannot tell when their cutover comes).
    pub unfinished: Vec<(String, String)>,
}

/// One hold in force: its move, its slots, and whether statements on those slots still wait
/// (`slots_held`; after the flip only statements reaching several shards do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMove {
    pub move_id: String,
    pub slots: String,
    pub slots_held: bool,
}

/// How long after a router was last seen a mover stops waiting for it, in SQL over
/// `pgshard.routers`: its lease (then it holds every slot itself), a poll and a second more.
/// Routers registered before leases count two polls and a second as their lease.
const GIVEN_UP_AFTER: &str = "make_interval(secs => \
    (greatest(lease_ms, 2 * poll_ms + 1000) + poll_ms + 1000) / 1000.0)";

/// Registers the router (or notes that it is alive), with its poll interval and lease: routers
/// seen within their lease, a poll and a second are the ones a cutover waits for.
pub async fn heartbeat(
    client: &impl GenericClient,
    router_id: &str,
    poll: Duration,
    lease: Duration,
) -> Result<(), CatalogError> {
    let host = hostname();
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    client
        .execute(
            "INSERT INTO pgshard.routers (router_id, host, pid, poll_ms, lease_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (router_id) DO UPDATE SET seen_at = now(), poll_ms = $4, lease_ms = $5",
            &[
                &router_id,
                &host,
                &(std::process::id() as i32),
                &ms(poll),
                &ms(lease),
            ],
        )
        .await?;
    Ok(())
}

/// Routers the mover has not heard from for longer than two of their polls and a second but
/// still counts (within their lease, a poll and a second): each with the seconds since it was
/// last seen and the seconds until the mover stops waiting for it. Such a router may still
/// route by an older map, so a cutover waits for it to answer again or to run out of lease.
pub async fn silent_routers(
    client: &impl GenericClient,
) -> Result<Vec<(String, f64, f64)>, CatalogError> {
    let rows = client
        .query(
            &format!(
                "SELECT router_id, extract(epoch FROM now() - seen_at)::float8, \
                   extract(epoch FROM seen_at + {GIVEN_UP_AFTER} - now())::float8 \
                 FROM pgshard.routers \
                 WHERE seen_at < now() - make_interval(secs => (2 * poll_ms + 1000) / 1000.0) \
                   AND seen_at > now() - {GIVEN_UP_AFTER} \
                 ORDER BY router_id"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Removes the router's registration (a clean shutdown).
pub async fn deregister(client: &impl GenericClient, router_id: &str) -> Result<(), CatalogError> {
    client
        .execute(
            "DELETE FROM pgshard.routers WHERE router_id = $1",
            &[&router_id],
        )
        .await?;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The epoch and the holds in force, in one statement (one snapshot): a router that sees a
/// hold gone also sees the epoch its mover flipped to. An expired hold is in force only if it
/// is sticky (its swap may have happened), and then for statements reaching several shards.
pub async fn router_view(client: &impl GenericClient) -> Result<RouterView, CatalogError> {
    let row = client
        .query_one(
            "SELECT e.epoch, \
               array(SELECT move_id FROM pgshard.holds WHERE expires_at > now() OR sticky \
                     ORDER BY move_id), \
               array(SELECT slots FROM pgshard.holds WHERE expires_at > now() OR sticky \
                     ORDER BY move_id), \
               array(SELECT scope = 'slots' AND expires_at > now() FROM pgshard.holds \
                     WHERE expires_at > now() OR sticky ORDER BY move_id), \
               array(SELECT move_id FROM pgshard.moves WHERE step NOT IN ('done', 'aborted') \
                     ORDER BY move_id), \
               array(SELECT slots FROM pgshard.moves WHERE step NOT IN ('done', 'aborted') \
                     ORDER BY move_id) \
             FROM pgshard.map_epoch e",
            &[],
        )
        .await?;
    let ids: Vec<String> = row.get(1);
    let slots: Vec<String> = row.get(2);
    let held: Vec<bool> = row.get(3);
    let moving: Vec<String> = row.get(4);
    let moving_slots: Vec<String> = row.get(5);
    Ok(RouterView {
        unfinished: moving.into_iter().zip(moving_slots).collect(),
        epoch: row.get::<_, i64>(0) as u64,
        holds: ids
            .into_iter()
            .zip(slots)
            .zip(held)
            .map(|((move_id, slots), slots_held)| HeldMove {
                move_id,
                slots,
                slots_held,
            })
            .collect(),
    })
}

/// The routers registered in the catalog: id, host, seconds since each was last seen, and
/// where it stands for a cutover (in contact, silent and waited for, or given up).
pub async fn routers(
    client: &impl GenericClient,
) -> Result<Vec<(String, String, f64, String)>, CatalogError> {
    let rows = client
        .query(
            &format!(
                "SELECT router_id, host, extract(epoch FROM now() - seen_at)::float8, \
                   CASE WHEN seen_at > now() - make_interval(secs => (2 * poll_ms + 1000) / 1000.0) \
                        THEN 'in contact' \
                        WHEN seen_at > now() - {GIVEN_UP_AFTER} \
                        THEN format('silent: a cutover waits for it %s s more', \
                               round(extract(epoch FROM seen_at + {GIVEN_UP_AFTER} - now())::numeric, 1)) \
                        ELSE 'given up: a cutover goes on without it (if it still runs, it holds \
                              every slot since its lease ran out)' END \
                 FROM pgshard.routers ORDER BY router_id"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// A router acknowledges a hold: it holds the slots and no older transaction is open.
/// `readers`: the read-only transactions older than the hold have ended too (the first answer
/// says only that those that may write have).
pub async fn acknowledge(
    client: &impl GenericClient,
    move_id: &str,
    router_id: &str,
    readers: bool,
) -> Result<(), CatalogError> {
    client
        .execute(
            "INSERT INTO pgshard.hold_acks (move_id, router_id, readers_drained) \
             SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM pgshard.holds WHERE move_id = $1) \
             ON CONFLICT (move_id, router_id) DO UPDATE SET readers_drained = $3, \
               acked_at = now()",
            &[&move_id, &router_id, &readers],
        )
        .await?;
    Ok(())
}

/// The mover asks every router to hold `slots` until `expires` from now (acknowledgements of
/// an earlier attempt are dropped). Returns the routers it must hear from: those seen within
/// their lease, a poll and a second (one not seen for longer holds every slot by itself).
pub async fn request_hold(
    client: &mut tokio_postgres::Client,
    move_id: &str,
    slots: &str,
    expires: Duration,
) -> Result<Vec<String>, CatalogError> {
    let tx = client.transaction().await?;
    let secs = expires.as_secs_f64();
    tx.execute(
        "INSERT INTO pgshard.holds (move_id, slots, expires_at) \
         VALUES ($1, $2, now() + make_interval(secs => $3)) \
         ON CONFLICT (move_id) DO UPDATE SET slots = $2, requested_at = now(), \
           expires_at = now() + make_interval(secs => $3), scope = 'slots', sticky = false",
        &[&move_id, &slots, &secs],
    )
    .await?;
    tx.execute(
        "DELETE FROM pgshard.hold_acks WHERE move_id = $1",
        &[&move_id],
    )
    .await?;
    tx.execute("SELECT pg_notify($1, 'hold')", &[&CHANNEL])
        .await?;
    let rows = tx
        .query(
            &format!(
                "SELECT router_id FROM pgshard.routers WHERE seen_at > now() - {GIVEN_UP_AFTER} \
                 ORDER BY router_id"
            ),
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Of the registered routers, those a hold does not wait for (not in `waited`: not heard from
/// within their lease, a poll and a second), and the latest time (seconds since the Unix
/// epoch) at which the mover stopped waiting for one of them; `None` if every router is waited.
pub async fn given_up(
    client: &impl GenericClient,
    waited: &[String],
) -> Result<Option<(Vec<String>, f64)>, CatalogError> {
    let rows = client
        .query(
            &format!(
                "SELECT router_id, extract(epoch FROM seen_at + {GIVEN_UP_AFTER})::float8 \
                 FROM pgshard.routers WHERE router_id <> ALL($1) ORDER BY router_id"
            ),
            &[&waited],
        )
        .await?;
    let latest = rows.iter().map(|r| r.get::<_, f64>(1)).reduce(f64::max);
    Ok(latest.map(|at| (rows.iter().map(|r| r.get(0)).collect(), at)))
}

/// Routers that have acknowledged `move_id`'s hold (with `readers`: also for their read-only
/// transactions).
pub async fn acknowledged(
    client: &impl GenericClient,
    move_id: &str,
    readers: bool,
) -> Result<Vec<String>, CatalogError> {
    let rows = client
        .query(
            "SELECT router_id FROM pgshard.hold_acks WHERE move_id = $1 \
             AND (readers_drained OR NOT $2) ORDER BY router_id",
            &[&move_id, &readers],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Ends `move_id`'s hold (routers release its statements once they see it gone).
pub async fn drop_hold(client: &impl GenericClient, move_id: &str) -> Result<(), CatalogError> {
    client
        .execute("DELETE FROM pgshard.holds WHERE move_id = $1", &[&move_id])
        .await?;
    client
        .execute(
            "DELETE FROM pgshard.hold_acks WHERE move_id = $1",
            &[&move_id],
        )
        .await?;
    client
        .execute("SELECT pg_notify($1, 'release')", &[&CHANNEL])
        .await?;
    Ok(())
}

/// Inside the flip's transaction: checks that the hold is still in force for at least `margin`
/// (else a router may already have released it on its own: [`CatalogError::HoldExpired`]) and
/// makes it last until [`drop_hold`], holding only statements that reach several shards from
/// then on (statements on the slots go to their new owner).
pub async fn keep_hold_in(
    tx: &impl GenericClient,
    move_id: &str,
    margin: Duration,
) -> Result<(), CatalogError> {
    let change = "expires_at = 'infinity'::timestamptz, scope = 'scatter'";
    change_hold(tx, move_id, margin, change).await
}

/// Before the swap: checks that the hold is in force for at least `margin` (else
/// [`CatalogError::HoldExpired`]) and makes it sticky: should the mover die before the flip,
/// routers let statements on the slots go on at the source when it expires, but keep holding
/// statements that reach several shards (the slots' rows may be on both shards) until `resume`
/// or `abort` undoes the swap and drops the hold.
pub async fn hold_through_swap(
    client: &impl GenericClient,
    move_id: &str,
    margin: Duration,
) -> Result<(), CatalogError> {
    change_hold(client, move_id, margin, "sticky = true").await
}

/// `UPDATE pgshard.holds SET <change>` of `move_id`'s hold if it lasts `margin` more.
async fn change_hold(
    client: &impl GenericClient,
    move_id: &str,
    margin: Duration,
    change: &str,
) -> Result<(), CatalogError> {
    let secs = margin.as_secs_f64();
    let sql = format!(
        "UPDATE pgshard.holds SET {change} \
         WHERE move_id = $1 AND expires_at > now() + make_interval(secs => $2)"
    );
    if client.execute(&sql, &[&move_id, &secs]).await? == 0 {
        return Err(CatalogError::HoldExpired(move_id.to_string()));
    }
    Ok(())
}

/// One move's journal row.
#[derive(Debug, Clone, PartialEq)]
pub struct Journal {
    pub move_id: String,
    pub slots: String,
    pub source: String,
    pub target: String,
    pub step: String,
    pub rows_copied: i64,
    pub bytes_copied: i64,
    pub copy_seconds: f64,
    pub changes_applied: i64,
    pub lag_bytes: Option<i64>,
    pub attempts: i32,
    pub hold_ms: Option<f64>,
    pub epoch_after: Option<i64>,
    pub error: Option<String>,
    pub started: String,
    pub updated: String,
    /// Slots per cutover (0: all at once), and how many slices were cut over and cleaned.
    pub slice_size: i32,
    pub slices_done: i32,
}

const JOURNAL_COLUMNS: &str = "move_id, slots, source, target, step, rows_copied, bytes_copied, \
     copy_seconds, changes_applied, lag_bytes, attempts, hold_ms, epoch_after, error, \
     to_char(started_at, 'YYYY-MM-DD HH24:MI:SS'), to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS'), \
     slice_size, slices_done";

fn journal_of(row: &tokio_postgres::Row) -> Journal {
    Journal {
        move_id: row.get(0),
        slots: row.get(1),
        source: row.get(2),
        target: row.get(3),
        step: row.get(4),
        rows_copied: row.get(5),
        bytes_copied: row.get(6),
        copy_seconds: row.get(7),
        changes_applied: row.get(8),
        lag_bytes: row.get(9),
        attempts: row.get(10),
        hold_ms: row.get(11),
        epoch_after: row.get(12),
        error: row.get(13),
        started: row.get(14),
        updated: row.get(15),
        slice_size: row.get(16),
        slices_done: row.get(17),
    }
}

/// Records a new move at step `planned`, cut over `slice_size` slots at a time (or returns the
/// existing row of that id).
pub async fn journal_start(
    client: &impl GenericClient,
    move_id: &str,
    (slots, slice_size): (&str, i32),
    source: &str,
    target: &str,
) -> Result<Journal, CatalogError> {
    client
        .execute(
            "INSERT INTO pgshard.moves (move_id, slots, source, target, step, slice_size) \
             VALUES ($1, $2, $3, $4, 'planned', $5) ON CONFLICT (move_id) DO NOTHING",
            &[&move_id, &slots, &source, &target, &slice_size],
        )
        .await?;
    journal_get(client, move_id)
        .await?
        .ok_or_else(|| CatalogError::Damaged(format!("move {move_id} vanished from the journal")))
}

pub async fn journal_get(
    client: &impl GenericClient,
    move_id: &str,
) -> Result<Option<Journal>, CatalogError> {
    let sql = format!("SELECT {JOURNAL_COLUMNS} FROM pgshard.moves WHERE move_id = $1");
    Ok(client
        .query_opt(&sql, &[&move_id])
        .await?
        .as_ref()
        .map(journal_of))
}

/// Every move, oldest first.
pub async fn journal_list(client: &impl GenericClient) -> Result<Vec<Journal>, CatalogError> {
    let sql = format!("SELECT {JOURNAL_COLUMNS} FROM pgshard.moves ORDER BY started_at, move_id");
    Ok(client
        .query(&sql, &[])
        .await?
        .iter()
        .map(journal_of)
        .collect())
}

/// Records that `move_id` reached `step` (and clears the last error).
pub async fn journal_step(
    client: &impl GenericClient,
    move_id: &str,
    step: &str,
) -> Result<(), CatalogError> {
    client
        .execute(
            "UPDATE pgshard.moves SET step = $2, updated_at = now(), error = NULL \
             WHERE move_id = $1",
            &[&move_id, &step],
        )
        .await?;
    Ok(())
}

/// Progress of the copy and the catch-up.
pub async fn journal_progress(
    client: &impl GenericClient,
    move_id: &str,
    rows: i64,
    bytes: i64,
    copy_seconds: f64,
    changes: i64,
    lag_bytes: Option<i64>,
) -> Result<(), CatalogError> {
    client
        .execute(
            "UPDATE pgshard.moves SET rows_copied = $2, bytes_copied = $3, copy_seconds = $4, \
               changes_applied = $5, lag_bytes = $6, updated_at = now() WHERE move_id = $1",
            &[&move_id, &rows, &bytes, &copy_seconds, &changes, &lag_bytes],
        )
        .await?;
    Ok(())
}

/// A cutover attempt ended (with `error` if it gave up).
pub async fn journal_attempt(
    client: &impl GenericClient,
    move_id: &str,
    error: Option<&str>,
) -> Result<(), CatalogError> {
    client
        .execute(
            "UPDATE pgshard.moves SET attempts = attempts + 1, error = $2, updated_at = now() \
             WHERE move_id = $1",
            &[&move_id, &error],
        )
        .await?;
    Ok(())
}

/// How long routers held the move's slots, from the hold's request to its end.
pub async fn journal_hold(
    client: &impl GenericClient,
    move_id: &str,
    hold_ms: f64,
) -> Result<(), CatalogError> {
    client
        .execute(
            "UPDATE pgshard.moves SET hold_ms = $2, updated_at = now() WHERE move_id = $1",
            &[&move_id, &hold_ms],
        )
        .await?;
    Ok(())
}

/// The flip's journal entry, inside its transaction.
pub async fn journal_flipped_in(
    tx: &impl GenericClient,
    move_id: &str,
    epoch: u64,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE pgshard.moves SET step = 'flipped', epoch_after = $2, updated_at = now(), \
           error = NULL WHERE move_id = $1",
        &[&move_id, &(epoch as i64)],
    )
    .await?;
    Ok(())
}

/// A slice's cutover and clean-up are over: recorded with its hold and flip (the move's last,
/// see [`journal_hold`] and [`journal_flipped_in`]), and the move goes on with the next slice
/// from step `copied` (its copy is the whole move's).
pub async fn journal_slice_done(
    client: &mut tokio_postgres::Client,
    move_id: &str,
    (slice, slots): (i32, &str),
) -> Result<(), CatalogError> {
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO pgshard.move_slices (move_id, slice, slots, hold_ms, epoch_after) \
         SELECT move_id, $2, $3, coalesce(hold_ms, 0), coalesce(epoch_after, 0) \
         FROM pgshard.moves WHERE move_id = $1 ON CONFLICT (move_id, slice) DO NOTHING",
        &[&move_id, &slice, &slots],
    )
    .await?;
    tx.execute(
        "UPDATE pgshard.moves SET slices_done = $2 + 1, step = 'copied', updated_at = now(), \
           error = NULL WHERE move_id = $1 AND slices_done = $2",
        &[&move_id, &slice],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// How long each slice of `move_id` held its slots, in slice order (ms).
pub async fn slice_holds(
    client: &impl GenericClient,
    move_id: &str,
) -> Result<Vec<f64>, CatalogError> {
    let rows = client
        .query(
            "SELECT hold_ms FROM pgshard.move_slices WHERE move_id = $1 ORDER BY slice",
            &[&move_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Takes the session-level advisory lock naming `move_id` on the catalog connection: one
/// mover per move. `false` when another process holds it.
pub async fn lock_move(client: &impl GenericClient, move_id: &str) -> Result<bool, CatalogError> {
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended('pgshard move ' || $1, 0))",
            &[&move_id],
        )
        .await?;
    Ok(row.get(0))
}
