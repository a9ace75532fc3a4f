//! Which shard keys each sharded-table occurrence in a statement is pinned to.
//!
//! Name scopes (a frame per SELECT level, binding aliases to occurrences), predicates on key
//! columns (`k = v`, `k IN (...)`, `k = ANY(ARRAY[...])`), and links between occurrences joined
//! or correlated on their keys. Links within one level are symmetric (the rows share a key);
//! a subquery correlated to an outer level, or the nullable side of an outer join, only
//! *follows* the other side: its rows are pinned when the other side is, never the reverse.
//! Only conjuncts (`AND`) are read; anything else pins nothing, which errs towards "needs the
//! key" rather than a wrong shard. Pure: never does I/O, never sees parameter values.

use std::sync::Arc;

use sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};

use super::plan::{KeyClass, KeyExpr, KeySet};
use crate::multishard::ShardedTable;
use crate::sharding::{key_from_text, KeyType};

/// Deepest AND/OR nesting read for keys; deeper predicates pin nothing (the safe side).
const MAX_PREDICATE_DEPTH: usize = 256;

/// How a predicate may restrict the rows it mentions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// WHERE, or the ON of an inner join: every occurrence of the current level.
    Filter,
    /// ON of a LEFT join: only the relation joined (occurrences numbered from `new_from`).
    LeftOuter { new_from: usize },
    /// ON of a RIGHT join: only the relations before it.
    RightOuter { new_from: usize },
}

impl Mode {
    fn restricts(self, occ: usize) -> bool {
        match self {
            Mode::Filter => true,
            Mode::LeftOuter { new_from } => occ >= new_from,
            Mode::RightOuter { new_from } => occ < new_from,
        }
    }
}

#[derive(Debug)]
struct Occurrence {
    table: Arc<ShardedTable>,
    sets: Vec<KeySet>,
    insert: bool,
}

#[derive(Debug)]
struct Binding {
    /// Alias, or the table name when there is none (lowercase).
    name: Box<str>,
    occ: Option<usize>,
}

/// Occurrences, their pins and links, and the name scopes used to resolve columns.
#[derive(Debug, Default)]
pub(super) struct KeyGraph {
    occs: Vec<Occurrence>,
    parent: Vec<usize>,
    /// `(follower, leader)`: the follower's rows are pinned wherever the leader's are.
    follows: Vec<(usize, usize)>,
    frames: Vec<Vec<Binding>>,
}

impl KeyGraph {
    pub fn push_frame(&mut self) {
        self.frames.push(Vec::new());
    }

    pub fn pop_frame(&mut self) {
        self.frames.pop();
    }

    /// Number of occurrences so far (the id the next one gets).
    pub fn occ_count(&self) -> usize {
        self.occs.len()
    }

    /// A sharded-table occurrence not reachable by name (an INSERT target).
    pub fn add_occurrence(&mut self, table: Arc<ShardedTable>, insert: bool) -> usize {
        let id = self.occs.len();
        self.occs.push(Occurrence {
            table,
            sets: Vec::new(),
            insert,
        });
        self.parent.push(id);
        id
    }

    /// Binds `name` in the current level, to a new occurrence when the table is sharded.
    pub fn bind(&mut self, name: &str, table: Option<Arc<ShardedTable>>) -> Option<usize> {
        let occ = table.map(|t| self.add_occurrence(t, false));
        if self.frames.is_empty() {
            self.push_frame();
        }
        if let Some(frame) = self.frames.last_mut() {
            frame.push(Binding {
                name: name.into(),
                occ,
            });
        }
        occ
    }

    /// Pins an occurrence to a set of keys, whatever the level.
    pub fn pin(&mut self, occ: usize, set: KeySet) {
        self.occs[occ].sets.push(set);
    }

    /// The table behind an occurrence.
    pub fn table(&self, occ: usize) -> &Arc<ShardedTable> {
        &self.occs[occ].table
    }

    /// Reads every conjunct of `e` for pins and links.
    pub fn apply(&mut self, e: &Expr, mode: Mode) {
        self.apply_at(e, mode, 0);
    }

    fn apply_at(&mut self, e: &Expr, mode: Mode, depth: usize) {
        if depth >= MAX_PREDICATE_DEPTH {
            return;
        }
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                self.apply_at(left, mode, depth + 1);
                self.apply_at(right, mode, depth + 1);
            }
            Expr::Nested(inner) => self.apply_at(inner, mode, depth + 1),
            Expr::BinaryOp {
                op: BinaryOperator::Or,
                ..
            } => self.disjunction(e, mode),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => self.equality(left, right, mode),
            Expr::InList {
                expr,
                list,
                negated: false,
            } => self.in_list(expr, list, mode),
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } => {
                if let Expr::Array(array) = strip(right) {
                    self.in_list(left, &array.elem, mode);
                }
            }
            _ => {}
        }
    }

    /// `JOIN ... USING (col)`: links the joined relation's occurrences keyed on `col` with the
    /// earlier ones of this level keyed on it.
    pub fn using(&mut self, column: &str, mode: Mode, new_from: usize) {
        let keyed: Vec<usize> = self
            .frames
            .last()
            .into_iter()
            .flatten()
            .filter_map(|b| b.occ)
            .filter(|&o| &*self.occs[o].table.key_column == column)
            .collect();
        let old = keyed.iter().copied().find(|&o| o < new_from);
        for new in keyed.iter().copied().filter(|&o| o >= new_from) {
            if let Some(old) = old {
                self.link((new, true), (old, true), mode);
            }
        }
    }

    fn equality(&mut self, left: &Expr, right: &Expr, mode: Mode) {
        match (self.key_ref(left), self.key_ref(right)) {
            (Some(a), Some(b)) => self.link(a, b, mode),
            (Some(a), None) => self.pin_value(a, right, mode),
            (None, Some(b)) => self.pin_value(b, left, mode),
            (None, None) => {}
        }
    }

    /// `k = 1 OR k = 42 OR k IN (...)` on one key column pins it to all those values.
    fn disjunction(&mut self, e: &Expr, mode: Mode) {
        let mut occ = None;
        let mut alts = Vec::new();
        if !self.disjuncts(e, &mut occ, &mut alts, 0) {
            return;
        }
        if let Some((occ, true)) = occ {
            if mode.restricts(occ) {
                self.pin(occ, KeySet { alts, rows: false });
            }
        }
    }

    /// Collects the values of an OR of key predicates on one occurrence; false otherwise.
    fn disjuncts(
        &self,
        e: &Expr,
        occ: &mut Option<(usize, bool)>,
        alts: &mut Vec<KeyExpr>,
        depth: usize,
    ) -> bool {
        if depth >= MAX_PREDICATE_DEPTH {
            return false;
        }
        let (column, values): (&Expr, &[Expr]) = match e {
            Expr::Nested(inner) => return self.disjuncts(inner, occ, alts, depth + 1),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Or,
                right,
            } => {
                return self.disjuncts(left, occ, alts, depth + 1)
                    && self.disjuncts(right, occ, alts, depth + 1)
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => match self.key_ref(left) {
                Some(_) => (left, std::slice::from_ref(&**right)),
                None => (right, std::slice::from_ref(&**left)),
            },
            Expr::InList {
                expr,
                list,
                negated: false,
            } => (expr, list),
            _ => return false,
        };
        let Some(found) = self.key_ref(column) else {
            return false;
        };
        if occ.is_some_and(|o| o != found) {
            return false;
        }
        *occ = Some(found);
        let key_type = self.occs[found.0].table.key_type;
        for v in values {
            match key_expr(v, key_type) {
                Some(k) => alts.push(k),
                None => return false,
            }
        }
        true
    }

    fn in_list(&mut self, column: &Expr, list: &[Expr], mode: Mode) {
        let Some((occ, current)) = self.key_ref(column) else {
            return;
        };
        if !current || !mode.restricts(occ) {
            return;
        }
        let key_type = self.occs[occ].table.key_type;
        let alts: Option<Vec<KeyExpr>> = list.iter().map(|e| key_expr(e, key_type)).collect();
        if let Some(alts) = alts {
            self.pin(occ, KeySet { alts, rows: false });
        }
    }

    fn pin_value(&mut self, (occ, current): (usize, bool), value: &Expr, mode: Mode) {
        if !current || !mode.restricts(occ) {
            return;
        }
        if let Some(k) = key_expr(value, self.occs[occ].table.key_type) {
            self.pin(
                occ,
                KeySet {
                    alts: vec![k],
                    rows: false,
                },
            );
        }
    }

    /// Links two key references; each is `(occurrence, in the current level)`.
    fn link(&mut self, (a, a_cur): (usize, bool), (b, b_cur): (usize, bool), mode: Mode) {
        let a_restricted = a_cur && mode.restricts(a);
        let b_restricted = b_cur && mode.restricts(b);
        match (a_restricted, b_restricted) {
            (true, true) => self.union(a, b),
            (true, false) => self.follows.push((a, b)),
            (false, true) => self.follows.push((b, a)),
            (false, false) => {}
        }
    }

    /// The occurrence whose key column `e` names, and whether it is in the current level.
    /// Unqualified columns resolve in the current level only (an inner table may have a column
    /// of that name too); qualified ones search outwards, as PostgreSQL does.
    fn key_ref(&self, e: &Expr) -> Option<(usize, bool)> {
        match strip(e) {
            Expr::Identifier(ident) => {
                let column = ident.value.to_ascii_lowercase();
                let frame = self.frames.last()?;
                let mut found = frame
                    .iter()
                    .filter_map(|b| b.occ)
                    .filter(|&o| *self.occs[o].table.key_column == *column);
                let first = found.next()?;
                // Two candidates are ambiguous unless already known to share the key.
                let root = self.find(first);
                found.all(|o| self.find(o) == root).then_some((first, true))
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let column = parts[parts.len() - 1].value.to_ascii_lowercase();
                let qualifier = parts[parts.len() - 2].value.to_ascii_lowercase();
                let top = self.frames.len().checked_sub(1)?;
                for (depth, frame) in self.frames.iter().enumerate().rev() {
                    if let Some(binding) = frame.iter().find(|b| *b.name == *qualifier) {
                        let occ = binding.occ?;
                        return (*self.occs[occ].table.key_column == *column)
                            .then_some((occ, depth == top));
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn find(&self, mut i: usize) -> usize {
        while self.parent[i] != i {
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[rb.max(ra)] = rb.min(ra);
        }
    }

    /// How many groups of occurrences have co-located rows: occurrences joined or correlated
    /// on their keys (in either direction) share a group, so each shard can answer for its own
    /// rows. One group means the statement is answerable per shard.
    pub fn colocated_groups(&self) -> usize {
        let mut parent: Vec<usize> = (0..self.occs.len()).map(|i| self.find(i)).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for &(a, b) in &self.follows {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent[ra.max(rb)] = ra.min(rb);
        }
        (0..parent.len())
            .filter(|&i| root(&mut parent, i) == i)
            .count()
    }

    /// The key classes, each with its own pins and those of every class it follows.
    pub fn finish(self) -> Vec<KeyClass> {
        let roots: Vec<usize> = (0..self.occs.len()).map(|i| self.find(i)).collect();
        let mut class_of = vec![usize::MAX; self.occs.len()];
        let mut classes: Vec<KeyClass> = Vec::new();
        let mut inserts: Vec<bool> = Vec::new();
        for (i, occ) in self.occs.iter().enumerate() {
            let root = roots[i];
            if class_of[root] == usize::MAX {
                class_of[root] = classes.len();
                classes.push(KeyClass {
                    table: occ.table.clone(),
                    sets: Vec::new(),
                    insert: false,
                });
                inserts.push(false);
            }
            let c = class_of[root];
            classes[c].sets.extend(occ.sets.iter().cloned());
            inserts[c] |= occ.insert;
        }
        let edges: Vec<(usize, usize)> = self
            .follows
            .iter()
            .map(|&(f, l)| (class_of[roots[f]], class_of[roots[l]]))
            .filter(|(f, l)| f != l)
            .collect();
        let own: Vec<Vec<KeySet>> = classes.iter().map(|c| c.sets.clone()).collect();
        for (c, class) in classes.iter_mut().enumerate() {
            class.insert = inserts[c];
            let mut seen = vec![false; own.len()];
            let mut stack = vec![c];
            seen[c] = true;
            while let Some(x) = stack.pop() {
                for &(_, leader) in edges.iter().filter(|(f, _)| *f == x) {
                    if !seen[leader] {
                        seen[leader] = true;
                        class.sets.extend(own[leader].iter().cloned());
                        stack.push(leader);
                    }
                }
            }
        }
        classes
    }
}

/// Strips parentheses and casts: `(u.user_id)::bigint` names `u.user_id`.
fn strip(mut e: &Expr) -> &Expr {
    loop {
        match e {
            Expr::Nested(inner) => e = inner,
            Expr::Cast { expr, .. } => e = expr,
            _ => return e,
        }
    }
}

/// A key value the router can use: a literal (hashed now, by the declared type), `$n`, or
/// NULL. `None` for anything computed.
pub(super) fn key_expr(e: &Expr, key_type: KeyType) -> Option<KeyExpr> {
    let literal = |text: &str| {
        Some(match key_from_text(key_type, text) {
            Ok(key) => KeyExpr::Slot(key.slot()),
            Err(err) => KeyExpr::Bad(err),
        })
    };
    match strip(e) {
        Expr::Value(v) => match &v.value {
            Value::Null => Some(KeyExpr::Null),
            Value::Placeholder(p) => {
                let number: usize = p.strip_prefix('$')?.parse().ok()?;
                let index = number.checked_sub(1)?;
                Some(KeyExpr::Param { index, key_type })
            }
            other => literal(literal_text(other)?),
        },
        Expr::UnaryOp { op, expr } => match (op, strip(expr)) {
            (UnaryOperator::Minus, Expr::Value(v)) => match &v.value {
                Value::Number(n, _) => literal(&format!("-{n}")),
                _ => None,
            },
            (UnaryOperator::Plus, Expr::Value(v)) => match &v.value {
                Value::Number(n, _) => literal(n),
                _ => None,
            },
            _ => None,
        },
        Expr::TypedString(t) => literal(literal_text(&t.value.value)?),
        _ => None,
    }
}

/// The text of a number or string literal.
pub(super) fn literal_text(v: &Value) -> Option<&str> {
    match v {
        Value::Number(n, _) => Some(n),
        Value::SingleQuotedString(s)
        | Value::EscapedStringLiteral(s)
        | Value::UnicodeStringLiteral(s)
        | Value::NationalStringLiteral(s) => Some(s),
        Value::DollarQuotedString(d) => Some(&d.value),
        _ => None,
    }
}
