//! The walk over expressions: finds function calls (for volatility) and subqueries (whose
//! tables and keys count too). Constructs it does not inspect make the statement count as
//! volatile, so doubt sends a read to the primary rather than to a replica.
//! Never does I/O; never evaluates anything.

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, WindowType,
};

use super::analyze::Analyzer;
use crate::sql::syntax::{last_ident, lower, one_child, two_children, MAX_WALK_DEPTH};

impl Analyzer<'_> {
    pub(super) fn expr(&mut self, e: &Expr) {
        if self.depth >= MAX_WALK_DEPTH {
            self.volatile = true;
            return;
        }
        self.depth += 1;
        self.expr_inner(e);
        self.depth -= 1;
    }

    fn expr_inner(&mut self, e: &Expr) {
        if let Some(child) = one_child(e) {
            self.expr(child);
        } else if let Some((a, b)) = two_children(e) {
            self.expr(a);
            self.expr(b);
        } else {
            self.compound(e);
        }
    }

    /// Leaves, and expressions with more than two parts or with subqueries.
    fn compound(&mut self, e: &Expr) {
        use Expr as E;
        match e {
            E::Identifier(_)
            | E::CompoundIdentifier(_)
            | E::Value(_)
            | E::TypedString(_)
            | E::Wildcard(_)
            | E::QualifiedWildcard(..) => {}
            E::InList { expr, list, .. } => {
                self.expr(expr);
                self.exprs(list);
            }
            E::InSubquery { expr, subquery, .. } => {
                self.expr(expr);
                self.query(subquery);
            }
            E::Exists { subquery, .. } | E::Subquery(subquery) => self.query(subquery),
            E::Between {
                expr, low, high, ..
            } => {
                self.expr(expr);
                self.expr(low);
                self.expr(high);
            }
            E::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                self.expr(expr);
                self.opt(substring_from.as_deref());
                self.opt(substring_for.as_deref());
            }
            E::Trim {
                expr,
                trim_what,
                trim_characters,
                ..
            } => {
                self.expr(expr);
                self.opt(trim_what.as_deref());
                self.exprs(trim_characters.as_deref().unwrap_or_default());
            }
            E::Overlay {
                expr,
                overlay_what,
                overlay_from,
                overlay_for,
            } => {
                self.expr(expr);
                self.expr(overlay_what);
                self.expr(overlay_from);
                self.opt(overlay_for.as_deref());
            }
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                self.opt(operand.as_deref());
                for when in conditions {
                    self.expr(&when.condition);
                    self.expr(&when.result);
                }
                self.opt(else_result.as_deref());
            }
            E::Function(f) => self.function(f),
            E::GroupingSets(sets) | E::Cube(sets) | E::Rollup(sets) => {
                sets.iter().for_each(|set| self.exprs(set));
            }
            E::Tuple(items) => self.exprs(items),
            E::Array(array) => self.exprs(&array.elem),
            E::Interval(interval) => self.expr(&interval.value),
            // Constructs PostgreSQL does not have, or not inspected: assume the worst.
            _ => self.volatile = true,
        }
    }

    fn exprs(&mut self, items: &[Expr]) {
        for e in items {
            self.expr(e);
        }
    }

    fn opt(&mut self, e: Option<&Expr>) {
        if let Some(e) = e {
            self.expr(e);
        }
    }

    pub(super) fn function(&mut self, f: &Function) {
        self.function_name(&f.name);
        self.function_arguments(&f.parameters);
        self.function_arguments(&f.args);
        if let Some(filter) = &f.filter {
            self.expr(filter);
        }
        for o in &f.within_group {
            self.expr(&o.expr);
        }
        if let Some(WindowType::WindowSpec(spec)) = &f.over {
            self.exprs(&spec.partition_by);
            for o in &spec.order_by {
                self.expr(&o.expr);
            }
        }
    }

    /// Marks the statement volatile when the function is (or is unknown).
    pub(super) fn function_name(&mut self, name: &ObjectName) {
        let volatile = match last_ident(name) {
            Some(n) => self.rules.volatility.is_volatile(&lower(n)),
            None => true,
        };
        self.volatile |= volatile;
    }

    fn function_arguments(&mut self, args: &FunctionArguments) {
        match args {
            FunctionArguments::None => {}
            FunctionArguments::Subquery(q) => self.query(q),
            FunctionArguments::List(list) => self.function_args_list(&list.args),
        }
    }

    pub(super) fn function_args_list(&mut self, args: &[FunctionArg]) {
        for arg in args {
            let (FunctionArg::Named { arg, .. }
            | FunctionArg::ExprNamed { arg, .. }
            | FunctionArg::Unnamed(arg)) = arg;
            if let FunctionArgExpr::Expr(e) = arg {
                self.expr(e);
            }
        }
    }
}
