//! Aggregates across shards without GROUP BY: every shard returns one row of partial aggregates
//! (count, sum, min, max, bool_and, bool_or) and pgshard combines them column by column into the
//! row one server would have returned. Only combinations it reproduces exactly are done: sums of
//! integers and numerics (exact decimal addition), min/max of the types `merge::SortType` orders;
//! anything else is an error naming the column, never an approximation.

use std::cmp::Ordering;

use super::error::SessionError;
use super::scatter::{unsupported_bytes, Gathered};
use super::Session;
use crate::backend::BackendManager;
use crate::merge::{add_decimal, SortType};
use crate::pool::Pooled;
use crate::router::Combine;
use crate::wire::{build, rows};

impl Session {
    /// Reads every shard's single row and sends the combined row.
    pub(super) async fn combine_aggregates(
        &mut self,
        conns: &mut [Pooled<BackendManager>],
        combine: &[Combine],
        gathered: &mut Gathered,
    ) -> Result<(), SessionError> {
        let mut totals: Vec<Option<Vec<u8>>> = vec![None; combine.len()];
        let bytewise = self
            .shared
            .text_is_bytewise
            .load(std::sync::atomic::Ordering::Relaxed);
        for conn in conns.iter_mut() {
            while let Some(row) = self.next_row(conn, gathered).await? {
                if gathered.error.is_some() {
                    continue;
                }
                let types = gathered
                    .described
                    .as_ref()
                    .and_then(|d| rows::column_types(&d[5..]));
                let Some(types) = types else { continue };
                for (i, how) in combine.iter().enumerate() {
                    let value = rows::data_row_field(&row[5..], i).flatten();
                    let oid = types.get(i).map_or(0, |t| t.1);
                    match fold(*how, oid, bytewise, totals[i].take(), value) {
                        Ok(total) => totals[i] = total,
                        Err(why) => {
                            let name = types.get(i).map_or("?", |t| t.0.as_str());
                            let why = format!("{why} (column {name})");
                            gathered
                                .error
                                .get_or_insert_with(|| unsupported_bytes(&why));
                        }
                    }
                }
            }
        }
        if gathered.error.is_none() {
            let fields: Vec<Option<&[u8]>> = totals.iter().map(|t| t.as_deref()).collect();
            build::data_row(&mut self.client_out, &fields);
            gathered.rows = 1;
        }
        Ok(())
    }
}

/// Folds one shard's partial aggregate into the running total; `Err` says what cannot be combined.
fn fold(
    how: Combine,
    oid: u32,
    bytewise: bool,
    total: Option<Vec<u8>>,
    value: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, String> {
    let Some(value) = value else {
        // NULL partials (no rows, or all NULL) leave the total as it is; count is never NULL.
        return Ok(total);
    };
    let Some(total) = total else {
        return Ok(Some(value.to_vec()));
    };
    let combined = match how {
        Combine::Count | Combine::Sum => {
            if !matches!(oid, 20 | 21 | 23 | 1700) {
                return Err(format!(
                    "a sum of type OID {oid}, whose order of addition changes the result"
                ));
            }
            add_decimal(&total, value)
                .ok_or("a sum that is not a finite decimal of at most 38 digits")?
                .into_bytes()
        }
        Combine::Min | Combine::Max => {
            let kind = SortType::of(oid, bytewise).ok_or(format!("min/max of type OID {oid}"))?;
            let ordering = kind.compare(value, &total);
            let take = match how {
                Combine::Min => ordering == Ordering::Less,
                _ => ordering == Ordering::Greater,
            };
            if take {
                value.to_vec()
            } else {
                total
            }
        }
        Combine::BoolAnd => bool_text(total == b"t" && value == b"t"),
        Combine::BoolOr => bool_text(total == b"t" || value == b"t"),
    };
    Ok(Some(combined))
}

fn bool_text(b: bool) -> Vec<u8> {
    if b {
        b"t".to_vec()
    } else {
        b"f".to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold_all(how: Combine, oid: u32, values: &[Option<&str>]) -> Result<Option<String>, String> {
        let mut total = None;
        for v in values {
            total = fold(how, oid, true, total, v.map(str::as_bytes))?;
        }
        Ok(total.map(|t| String::from_utf8(t).unwrap()))
    }

    #[test]
    fn counts_and_integer_sums_add_up() {
        assert_eq!(
            fold_all(Combine::Count, 20, &[Some("3"), Some("4")])
                .unwrap()
                .as_deref(),
            Some("7")
        );
        assert_eq!(
            fold_all(Combine::Sum, 1700, &[Some("1.50"), None, Some("2.5")])
                .unwrap()
                .as_deref(),
            Some("4.00")
        );
    }

    #[test]
    fn min_max_and_booleans_combine_like_one_server() {
        assert_eq!(
            fold_all(Combine::Min, 23, &[Some("9"), Some("10"), None])
                .unwrap()
                .as_deref(),
            Some("9")
        );
        assert_eq!(
            fold_all(Combine::Max, 1700, &[Some("9.5"), Some("10")])
                .unwrap()
                .as_deref(),
            Some("10")
        );
        assert_eq!(
            fold_all(Combine::BoolAnd, 16, &[Some("t"), Some("f")])
                .unwrap()
                .as_deref(),
            Some("f")
        );
        assert_eq!(
            fold_all(Combine::BoolOr, 16, &[Some("f"), None, Some("t")])
                .unwrap()
                .as_deref(),
            Some("t")
        );
        assert_eq!(fold_all(Combine::Max, 23, &[None, None]).unwrap(), None);
    }

    #[test]
    fn float_sums_are_refused_rather_than_approximated() {
        assert!(fold_all(Combine::Sum, 701, &[Some("0.1"), Some("0.2")]).is_err());
    }
}
