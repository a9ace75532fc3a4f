//! Aggregates in a cross-shard read: which calls are aggregates, how each combines across
//! shards ([`Combine`]), and the select-list check that finds aggregates and window functions
//! where a merge could not compute them. Pure: reads expressions, never rewrites one.

use sqlparser::ast::{
    DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArguments, ObjectNamePart,
};

use super::read_plan::{Combine, FOREIGN};
use crate::sql::syntax::{last_ident, lower, one_child, two_children, MAX_WALK_DEPTH};

/// PostgreSQL's built-in aggregate functions (lowercase), sorted for binary search.
#[rustfmt::skip]
const AGGREGATES: &[&str] = &[
    "any_value", "array_agg", "avg", "bit_and", "bit_or", "bit_xor", "bool_and", "bool_or",
    "corr", "count", "covar_pop", "covar_samp", "cume_dist", "dense_rank", "every", "grouping",
    "json_agg", "json_agg_strict", "json_arrayagg", "json_object_agg", "json_object_agg_strict",
    "json_object_agg_unique", "json_object_agg_unique_strict", "json_objectagg", "jsonb_agg",
    "jsonb_agg_strict", "jsonb_object_agg", "jsonb_object_agg_strict", "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict", "max", "min", "mode", "percent_rank", "percentile_cont",
    "percentile_disc", "range_agg", "range_intersect_agg", "rank", "regr_avgx", "regr_avgy",
    "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy",
    "stddev", "stddev_pop", "stddev_samp", "string_agg", "sum", "var_pop", "var_samp", "variance",
    "xmlagg",
];

type Check<T = ()> = Result<T, String>;

/// A call of a built-in aggregate (by name), or one with FILTER or WITHIN GROUP.
pub(super) fn is_aggregate(f: &Function) -> bool {
    let name = lower(last_ident(&f.name).unwrap_or_default());
    AGGREGATES.binary_search(&&*name).is_ok() || f.filter.is_some() || !f.within_group.is_empty()
}

/// How an aggregate call (not a window function) combines across shards, or the construct
/// that keeps it from combining.
pub(super) fn combine(f: &Function) -> Check<Combine> {
    let lowered = lower(last_ident(&f.name).unwrap_or_default()).into_owned();
    let named = format!("aggregate function {lowered}()");
    // PostgreSQL folds unquoted names; a quoted name is taken as written.
    let folded = match f.name.0.last() {
        Some(ObjectNamePart::Identifier(i)) if i.quote_style.is_some() => i.value.clone(),
        _ => lowered.clone(),
    };
    let schema_ok = match &f.name.0[..] {
        [_] => true,
        [ObjectNamePart::Identifier(schema), _] => {
            let schema = if schema.quote_style.is_some() {
                schema.value.clone()
            } else {
                lower(&schema.value).into_owned()
            };
            schema == "pg_catalog"
        }
        _ => false,
    };
    if !schema_ok {
        return Err(format!(
            "{named} qualified with a schema other than pg_catalog"
        ));
    }
    let combine = match folded.as_str() {
        "count" => Combine::Count,
        "sum" => Combine::Sum,
        "min" => Combine::Min,
        "max" => Combine::Max,
        "bool_and" | "every" => Combine::BoolAnd,
        "bool_or" => Combine::BoolOr,
        "avg" => Combine::Avg,
        _ => return Err(named),
    };
    if !f.within_group.is_empty() {
        return Err(format!("WITHIN GROUP on {named}"));
    }
    if f.uses_odbc_syntax
        || f.null_treatment.is_some()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return Err(FOREIGN.into());
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(FOREIGN.into());
    };
    if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
        return Err(format!("{folded}(DISTINCT ...)"));
    }
    if let Some(clause) = list.clauses.first() {
        return Err(match clause {
            FunctionArgumentClause::OrderBy(_) => format!("ORDER BY inside {named}"),
            _ => FOREIGN.into(),
        });
    }
    let [arg] = &list.args[..] else {
        return Err(format!("{named} with {} arguments", list.args.len()));
    };
    let FunctionArg::Unnamed(arg) = arg else {
        return Err(format!("a named argument to {named}"));
    };
    match arg {
        FunctionArgExpr::Expr(e) => expr(e, 1)?,
        FunctionArgExpr::Wildcard | FunctionArgExpr::QualifiedWildcard(_)
            if combine == Combine::Count => {}
        FunctionArgExpr::Wildcard | FunctionArgExpr::QualifiedWildcard(_) => {
            return Err(format!("{lowered}(*)"))
        }
    }
    Ok(combine)
}

/// Checks a select-list expression for aggregates and window functions. Subqueries are not
/// entered: they are per row, and co-location is checked on the key graph.
pub(super) fn expr(e: &Expr, depth: usize) -> Check {
    if depth >= MAX_WALK_DEPTH {
        return Err("an expression nested too deeply".into());
    }
    let depth = depth + 1;
    if let Some(child) = one_child(e) {
        return expr(child, depth);
    }
    if let Some((a, b)) = two_children(e) {
        expr(a, depth)?;
        return expr(b, depth);
    }
    use Expr as E;
    let all = |items: &[Expr]| items.iter().try_for_each(|e| expr(e, depth));
    let opt = |e: Option<&Expr>| e.map_or(Ok(()), |e| expr(e, depth));
    match e {
        E::Identifier(_)
        | E::CompoundIdentifier(_)
        | E::Value(_)
        | E::TypedString(_)
        | E::Wildcard(_)
        | E::QualifiedWildcard(..)
        | E::Exists { .. }
        | E::Subquery(_) => Ok(()),
        E::InSubquery { expr: x, .. } => expr(x, depth),
        E::InList { expr: x, list, .. } => {
            expr(x, depth)?;
            all(list)
        }
        E::Between {
            expr: x, low, high, ..
        } => {
            expr(x, depth)?;
            expr(low, depth)?;
            expr(high, depth)
        }
        E::Substring {
            expr: x,
            substring_from,
            substring_for,
            ..
        } => {
            expr(x, depth)?;
            opt(substring_from.as_deref())?;
            opt(substring_for.as_deref())
        }
        E::Trim {
            expr: x,
            trim_what,
            trim_characters,
            ..
        } => {
            expr(x, depth)?;
            opt(trim_what.as_deref())?;
            all(trim_characters.as_deref().unwrap_or_default())
        }
        E::Overlay {
            expr: x,
            overlay_what,
            overlay_from,
            overlay_for,
        } => {
            expr(x, depth)?;
            expr(overlay_what, depth)?;
            expr(overlay_from, depth)?;
            opt(overlay_for.as_deref())
        }
        E::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            opt(operand.as_deref())?;
            for when in conditions {
                expr(&when.condition, depth)?;
                expr(&when.result, depth)?;
            }
            opt(else_result.as_deref())
        }
        E::Function(f) => function(f, depth),
        E::GroupingSets(sets) | E::Cube(sets) | E::Rollup(sets) => {
            sets.iter().try_for_each(|set| all(set))
        }
        E::Tuple(items) => all(items),
        E::Array(array) => all(&array.elem),
        E::Interval(interval) => expr(&interval.value, depth),
        _ => Err("an expression pgshard does not inspect".into()),
    }
}

/// A function call: window functions (`OVER`) and aggregates are refused; arguments are
/// checked (a subquery argument, as in `ARRAY(SELECT ...)`, is per row).
fn function(f: &Function, depth: usize) -> Check {
    let name = lower(last_ident(&f.name).unwrap_or_default()).into_owned();
    if f.over.is_some() {
        return Err(format!("window function {name}()"));
    }
    let aggregate = AGGREGATES.binary_search(&name.as_str()).is_ok()
        || f.filter.is_some()
        || !f.within_group.is_empty();
    if aggregate {
        return Err(format!("aggregate function {name}()"));
    }
    for args in [&f.parameters, &f.args] {
        if let FunctionArguments::List(list) = args {
            for arg in &list.args {
                let (FunctionArg::Named { arg, .. }
                | FunctionArg::ExprNamed { arg, .. }
                | FunctionArg::Unnamed(arg)) = arg;
                if let FunctionArgExpr::Expr(e) = arg {
                    expr(e, depth)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::AGGREGATES;

    #[test]
    fn aggregate_names_are_sorted_for_binary_search() {
        assert!(AGGREGATES.windows(2).all(|w| w[0] < w[1]));
    }
}
