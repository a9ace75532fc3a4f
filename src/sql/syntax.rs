//! Small helpers over sqlparser's syntax tree that both the router and the cross-shard planning
//! use: names as PostgreSQL folds them, and the operands of expressions with one or two.
//! Reads trees only: never builds, rewrites or judges a statement.

use std::borrow::Cow;

use sqlparser::ast::{Expr, Ident, ObjectName, ObjectNamePart};

/// Deepest expression nesting a walk over the tree enters; a walk treats deeper parts as its
/// safe side (volatile, refused, or pinning no key). Bounds stack use whatever the parser accepted.
pub(crate) const MAX_WALK_DEPTH: usize = 256;

/// The unqualified name: `public.users` → `users`.
pub(crate) fn last_ident(name: &ObjectName) -> Option<&str> {
    match name.0.last()? {
        ObjectNamePart::Identifier(i) => Some(&i.value),
        _ => None,
    }
}

/// Lowercase without allocating when already lowercase.
pub(crate) fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// An identifier as PostgreSQL folds it: lowercase unless quoted.
pub(crate) fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        lower(&ident.value).into_owned()
    }
}

/// The operand of expressions with exactly one.
pub(crate) fn one_child(e: &Expr) -> Option<&Expr> {
    use Expr as E;
    match e {
        E::IsFalse(x)
        | E::IsNotFalse(x)
        | E::IsTrue(x)
        | E::IsNotTrue(x)
        | E::IsNull(x)
        | E::IsNotNull(x)
        | E::IsUnknown(x)
        | E::IsNotUnknown(x)
        | E::Nested(x)
        | E::IsNormalized { expr: x, .. }
        | E::UnaryOp { expr: x, .. }
        | E::Cast { expr: x, .. }
        | E::Extract { expr: x, .. }
        | E::Ceil { expr: x, .. }
        | E::Floor { expr: x, .. }
        | E::Collate { expr: x, .. }
        | E::Named { expr: x, .. }
        | E::Prefixed { value: x, .. }
        | E::JsonAccess { value: x, .. }
        | E::CompoundFieldAccess { root: x, .. } => Some(x),
        _ => None,
    }
}

/// The operands of binary expressions.
pub(crate) fn two_children(e: &Expr) -> Option<(&Expr, &Expr)> {
    use Expr as E;
    match e {
        E::IsDistinctFrom(a, b)
        | E::IsNotDistinctFrom(a, b)
        | E::BinaryOp {
            left: a, right: b, ..
        }
        | E::AnyOp {
            left: a, right: b, ..
        }
        | E::AllOp {
            left: a, right: b, ..
        }
        | E::Like {
            expr: a,
            pattern: b,
            ..
        }
        | E::ILike {
            expr: a,
            pattern: b,
            ..
        }
        | E::SimilarTo {
            expr: a,
            pattern: b,
            ..
        }
        | E::InUnnest {
            expr: a,
            array_expr: b,
            ..
        }
        | E::AtTimeZone {
            timestamp: a,
            time_zone: b,
        }
        | E::Position { expr: a, r#in: b } => Some((a, b)),
        _ => None,
    }
}
