//! Which SQL functions are VOLATILE: a read calling one must run on a primary.
//!
//! The table is data handed to the router: built-in defaults here, refined by the caller from
//! `pg_proc` ([`Volatility::PG_PROC_QUERY`]) when backends connect and on reload. A function the
//! table does not know is treated as volatile (the safe side: the primary). This module never
//! does I/O and never asks a server anything itself.

use std::collections::{HashMap, HashSet};

/// Function name (lowercase, unqualified) → whether it is VOLATILE.
#[derive(Debug, Clone)]
pub struct Volatility {
    functions: HashMap<Box<str>, bool>,
    /// The compiled-in names (both lists): functions PostgreSQL ships, whatever `pg_proc` adds.
    builtin: HashSet<Box<str>>,
}

/// Built-in functions PostgreSQL marks VOLATILE that apps commonly call in reads. Listed so the
/// intent is explicit; unknown functions are volatile anyway.
const VOLATILE: &str = "\
    nextval setval currval lastval random random_normal setseed gen_random_uuid uuid_generate_v1 \
    uuid_generate_v4 clock_timestamp timeofday txid_current pg_current_xact_id pg_advisory_lock \
    pg_advisory_lock_shared pg_advisory_unlock pg_advisory_unlock_all pg_advisory_unlock_shared \
    pg_advisory_xact_lock pg_advisory_xact_lock_shared pg_try_advisory_lock \
    pg_try_advisory_lock_shared pg_try_advisory_xact_lock pg_try_advisory_xact_lock_shared \
    pg_sleep pg_sleep_for pg_sleep_until pg_notify set_config pg_cancel_backend \
    pg_terminate_backend pg_is_in_recovery dblink dblink_exec";

/// Common built-ins PostgreSQL marks STABLE or IMMUTABLE: reads calling only these stay plain
/// reads (replica-eligible).
const STABLE_OR_IMMUTABLE: &str = "\
    now current_timestamp current_date current_time localtime localtimestamp \
    transaction_timestamp statement_timestamp current_user session_user user current_role \
    current_schema current_schemas current_database current_catalog current_setting version \
    inet_server_port inet_server_addr inet_client_port inet_client_addr pg_backend_pid pg_typeof \
    age date_trunc date_part extract make_date make_time make_timestamp make_timestamptz \
    make_interval to_char to_date to_timestamp to_number timezone isfinite lower upper initcap \
    length char_length character_length octet_length bit_length substr substring replace concat \
    concat_ws trim btrim ltrim rtrim lpad rpad left right repeat reverse split_part strpos \
    position format md5 sha256 encode decode regexp_replace regexp_match regexp_matches \
    regexp_split_to_array regexp_split_to_table starts_with quote_ident quote_literal \
    quote_nullable translate ascii chr string_to_array array_to_string overlay coalesce nullif \
    greatest least abs ceil ceiling floor round trunc mod power sqrt cbrt exp ln log log10 sign \
    pi div gcd lcm width_bucket to_hex count sum avg min max bool_and bool_or every array_agg \
    string_agg json_agg jsonb_agg json_object_agg jsonb_object_agg stddev variance \
    percentile_cont percentile_disc mode row_number rank dense_rank percent_rank cume_dist ntile \
    lag lead first_value last_value nth_value array_length array_upper array_lower cardinality \
    array_position array_positions array_append array_prepend array_cat array_remove unnest \
    generate_series generate_subscripts json_build_object jsonb_build_object json_build_array \
    jsonb_build_array to_json to_jsonb row_to_json array_to_json jsonb_set jsonb_insert \
    jsonb_extract_path jsonb_extract_path_text json_extract_path json_extract_path_text \
    jsonb_array_elements jsonb_array_elements_text json_array_elements json_array_elements_text \
    jsonb_array_length json_array_length jsonb_typeof json_typeof jsonb_strip_nulls jsonb_pretty \
    jsonb_each jsonb_each_text json_each json_each_text jsonb_object_keys json_object_keys \
    has_table_privilege has_schema_privilege has_database_privilege pg_get_userbyid format_type \
    obj_description col_description";

impl Default for Volatility {
    fn default() -> Self {
        Volatility::builtin()
    }
}

impl Volatility {
    /// The query whose rows [`Volatility::learn_pg_proc`] takes: every function's name and
    /// `provolatile` (`i`, `s` or `v`).
    pub const PG_PROC_QUERY: &'static str = "SELECT proname, provolatile FROM pg_catalog.pg_proc";

    /// The built-in defaults: common volatile and common stable/immutable functions.
    pub fn builtin() -> Volatility {
        let mut functions = HashMap::new();
        for name in STABLE_OR_IMMUTABLE.split_whitespace() {
            functions.insert(Box::from(name), false);
        }
        for name in VOLATILE.split_whitespace() {
            functions.insert(Box::from(name), true);
        }
        let builtin = functions.keys().cloned().collect();
        Volatility { functions, builtin }
    }

    /// Records what `pg_proc` says, replacing the defaults for the names it lists: rows are
    /// `(proname, provolatile)`. Overloads with one name (in any schema) are volatile if any of
    /// them is, since the router cannot tell which one a call picks.
    pub fn learn_pg_proc<'a>(&mut self, rows: impl IntoIterator<Item = (&'a str, u8)>) {
        let mut seen: HashSet<Box<str>> = HashSet::new();
        for (name, provolatile) in rows {
            let name: Box<str> = name.to_ascii_lowercase().into();
            // Anything but 'i' (immutable) and 's' (stable) is volatile, including the unknown.
            let volatile = !matches!(provolatile, b'i' | b's');
            if seen.insert(name.clone()) {
                self.functions.insert(name, volatile);
            } else if volatile {
                self.functions.insert(name, true);
            }
        }
    }

    /// Sets one function's volatility (name unqualified; any case).
    pub fn set(&mut self, name: &str, volatile: bool) {
        self.functions
            .insert(name.to_ascii_lowercase().into(), volatile);
    }

    /// Whether a call to `name` (lowercase, unqualified) must run on a primary. Unknown names
    /// are volatile.
    pub fn is_volatile(&self, name: &str) -> bool {
        self.functions.get(name).copied().unwrap_or(true)
    }

    /// Whether `name` (lowercase, unqualified) is one of the built-in functions listed here
    /// (not merely learned from `pg_proc`, where user functions are listed too).
    pub fn is_known_builtin(&self, name: &str) -> bool {
        self.builtin.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_know_sequences_volatile_and_now_stable() {
        let v = Volatility::builtin();
        assert!(v.is_volatile("nextval"));
        assert!(v.is_volatile("pg_advisory_xact_lock"));
        assert!(!v.is_volatile("now"));
        assert!(!v.is_volatile("inet_server_port"));
    }

    #[test]
    fn unknown_functions_are_volatile() {
        assert!(Volatility::builtin().is_volatile("my_user_function"));
    }

    #[test]
    fn pg_proc_rows_override_defaults_and_volatile_overloads_win() {
        let mut v = Volatility::builtin();
        v.learn_pg_proc([
            ("my_stable_fn", b's'),
            ("lower", b'i'),
            ("lower", b'v'),
            ("Shout", b'i'),
        ]);
        assert!(!v.is_volatile("my_stable_fn"));
        assert!(v.is_volatile("lower"));
        assert!(!v.is_volatile("shout"));
    }
}
