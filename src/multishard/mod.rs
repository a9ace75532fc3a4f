//! Cross-shard work, planned once per statement text: how a read that spans shards is answered
//! ([`Scatter`]: the shards' rows concatenated, merged in order, or a rewritten statement whose
//! rows are combined, [`Merge`]), how a multi-row INSERT is cut per shard ([`SplitPart`]), and
//! how a COPY is split by key or gathered ([`CopyPlan`], with [`RowSplitter`] cutting its data
//! into rows).
//!
//! Called by the router, which hands in what its analysis found (`Facts`) and answers
//! questions about tables (`Tables`). Pure and synchronous: never does I/O, never sees
//! parameter values, and never imports the router, the session or anything that does I/O.

mod aggregate;
mod copy;
mod copy_rows;
mod gather;
mod input;
mod read_plan;
mod scatter;
mod sort;
mod split;

pub use copy::{CopyIn, CopyKeyError, CopyOut, CopyPlan};
pub use copy_rows::{CopyFormat, CopyRow, CopyRowError, RowSplitter};
pub use input::ShardedTable;
pub use read_plan::{
    Combine, CompareOp, Groups, KeyCollation, Merge, Operand, Output, Predicate, Scatter,
    SortColumn, SortKey,
};
pub use split::SplitPart;

pub(crate) use copy::copy_plan;
pub(crate) use input::{Facts, Tables};
pub(crate) use read_plan::{NO_SHARDED_TABLE, UNPARSED};
pub(crate) use scatter::scatter;
pub(crate) use split::{prepare as prepare_split, InsertSplit};
