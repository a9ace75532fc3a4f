//! Values of cross-shard aggregates: folding partial aggregates (count, sum, min, max, bool_and,
//! bool_or) into the value one server would have computed, and HAVING conditions over the
//! combined values. Only combinations it reproduces exactly are done: sums of integers and
//! numerics (exact decimal addition), min/max of the types `merge::SortType` orders; anything
//! else is an error naming what cannot be combined, never an approximation. Pure: no I/O.

use std::cmp::Ordering;

use crate::merge::{add_decimal, SortType, TypeRules};
use crate::router::{Combine, CompareOp, Operand, Predicate};

/// Folds one shard's partial aggregate into the running total; `Err` says what cannot be combined.
pub(super) fn fold(
    how: Combine,
    oid: u32,
    rules: &TypeRules,
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
            let kind = rules
                .sort_type(oid)
                .ok_or(format!("min/max of type OID {oid}"))?;
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
        Combine::Avg => return Err("avg() folded as one column".into()),
    };
    Ok(Some(combined))
}

/// Why a partial aggregate of this type cannot be combined exactly, if it cannot.
pub(super) fn check_type(how: Combine, oid: u32, rules: &TypeRules) -> Result<(), String> {
    if matches!(how, Combine::Min | Combine::Max) {
        if let Err(Some(why)) = rules.sort_type_or_why(oid, || rules.text.expression(oid)) {
            return Err(format!("min/max of text ({why})"));
        }
    }
    let ok = match how {
        Combine::Count | Combine::Sum => matches!(oid, 20 | 21 | 23 | 1700),
        Combine::Avg => matches!(oid, 20 | 1700),
        Combine::Min | Combine::Max => rules.sort_type(oid).is_some(),
        Combine::BoolAnd | Combine::BoolOr => oid == 16,
    };
    if ok {
        return Ok(());
    }
    Err(match how {
        Combine::Sum | Combine::Count => {
            format!("a sum of type OID {oid}, whose order of addition changes the result")
        }
        Combine::Avg => format!(
            "avg() of type OID {oid} (sum type); only integer and numeric averages are exact"
        ),
        _ => format!("min/max of type OID {oid}"),
    })
}

/// A HAVING condition on one group's outputs (`values[i]`, of type `oids[i]`), in SQL's
/// three-valued logic: `Some(true)` keeps the group.
pub(super) fn evaluate(
    p: &Predicate,
    values: &[Option<Vec<u8>>],
    oids: &[u32],
    rules: &TypeRules,
) -> Result<Option<bool>, String> {
    let eval = |p: &Predicate| evaluate(p, values, oids, rules);
    Ok(match p {
        Predicate::And(a, b) => match (eval(a)?, eval(b)?) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Predicate::Or(a, b) => match (eval(a)?, eval(b)?) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Predicate::Not(a) => eval(a)?.map(|b| !b),
        Predicate::Constant(b) => Some(*b),
        Predicate::IsNull(operand, negated) => {
            let (value, _) = operand_value(operand, values, oids);
            Some(value.is_none() != *negated)
        }
        Predicate::Compare(a, op, b) => {
            let ordering = compare_operands(a, b, values, oids, rules)?;
            ordering.map(|o| match op {
                CompareOp::Eq => o == Ordering::Equal,
                CompareOp::NotEq => o != Ordering::Equal,
                CompareOp::Lt => o == Ordering::Less,
                CompareOp::LtEq => o != Ordering::Greater,
                CompareOp::Gt => o == Ordering::Greater,
                CompareOp::GtEq => o != Ordering::Less,
            })
        }
    })
}

fn operand_value<'v>(
    operand: &'v Operand,
    values: &'v [Option<Vec<u8>>],
    oids: &[u32],
) -> (Option<&'v [u8]>, Option<u32>) {
    match operand {
        Operand::Output(i) => (
            values.get(*i).and_then(|v| v.as_deref()),
            oids.get(*i).copied(),
        ),
        Operand::Literal(text) => (text.as_deref().map(str::as_bytes), None),
        Operand::Param(i) => (values.get(*i).and_then(|v| v.as_deref()), None),
    }
}

/// Compares two HAVING operands by the type of the output among them (`None`: one is NULL).
fn compare_operands(
    a: &Operand,
    b: &Operand,
    values: &[Option<Vec<u8>>],
    oids: &[u32],
    rules: &TypeRules,
) -> Result<Option<Ordering>, String> {
    let (va, ta) = operand_value(a, values, oids);
    let (vb, tb) = operand_value(b, values, oids);
    let oid = ta.or(tb).ok_or("HAVING comparing two constants")?;
    let kind = match rules.sort_type(oid) {
        Some(SortType::Integer) => SortType::Numeric,
        Some(kind) => kind,
        None => return Err(format!("HAVING comparing a value of type OID {oid}")),
    };
    let (Some(va), Some(vb)) = (va, vb) else {
        return Ok(None);
    };
    let literal = |v: &[u8], typed: Option<u32>| -> Result<Vec<u8>, String> {
        if typed.is_some() {
            return Ok(v.to_vec());
        }
        match kind {
            SortType::Bool => match v.to_ascii_lowercase().as_slice() {
                b"t" | b"true" | b"yes" | b"y" | b"on" | b"1" => Ok(b"t".to_vec()),
                b"f" | b"false" | b"no" | b"n" | b"off" | b"0" => Ok(b"f".to_vec()),
                _ => Err("HAVING comparing a boolean with a constant that is not one".into()),
            },
            SortType::Numeric | SortType::Float
                if crate::merge::average(v, b"1").is_none() && v != b"NaN" =>
            {
                Err("HAVING comparing a number with a constant that is not a number".into())
            }
            _ => Ok(v.to_vec()),
        }
    };
    let (va, vb) = (literal(va, ta)?, literal(vb, tb)?);
    Ok(Some(kind.compare(&va, &vb)))
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
            total = fold(
                how,
                oid,
                &TypeRules {
                    text: crate::collation::TextRules::only(crate::collation::Collator::CodePoint),
                    iso_dates: true,
                },
                total,
                v.map(str::as_bytes),
            )?;
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
