//! Statements at the parser's limits (`sql::parse`) still get a plan, on a small stack.

use super::router;
use crate::sql::parse::MAX_OPERATOR_CHAIN;

#[test]
fn planning_a_deep_chain_fits_a_small_stack_and_errs_to_the_primary() {
    let sql = format!(
        "SELECT * FROM users WHERE user_id = 42 AND x = 1{}",
        " OR x = 1".repeat(MAX_OPERATOR_CHAIN / 3)
    );
    let worker = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let router = router();
            let plan = router.plan(&sql);
            (plan.is_parsed(), plan.is_plain_read())
        })
        .expect("spawn a thread");
    assert_eq!(worker.join().expect("no stack overflow"), (true, false));
}

/// 260 bytes of nested calls (found by the `sql` fuzz target) that took sqlparser 30 s to
/// refuse: the router plans them as unparsable without handing them to sqlparser.
#[test]
fn fuzz_found_nested_calls_are_planned_unparsed() {
    let sql = concat!(
        "SELECT stas, C.A(LESCE(count(note!, us, COAs, C.A(LESCE(count(~ote!, u",
        "s, COAtus, C.A(LESCE(count(note!, us, COA(LES0tus, C.A(LESCE(coun, C.A",
        "(LESCE(count(note!, us, COAs, C.A(LESCE(count(~ote!, us, COAtus, C.A(L",
        "ESCE(count(note!, us, COA(LESt(note!, us, COA(LES0",
    );
    let plan = super::router().plan(sql);
    assert!(!plan.is_parsed());
}
