//! Text comparison under a PostgreSQL collation, as a shard compares: code point order (C,
//! POSIX, C.UTF-8), the C library's `strcoll_l` for a libc locale, or ICU's `ucol_strcollUTF8`
//! for an ICU locale, with PostgreSQL's tie-break by bytes for deterministic collations; and
//! the probe set checked against each shard's own order. Never touches process-global locale
//! state (no `setlocale`) and does no I/O; the ICU library is loaded by whoever owns a [`Icu`].

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::Arc;

/// How a collation orders text, as read from the catalog (`pg_database` or `pg_collation`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Spec {
    /// C, POSIX, C.UTF-8: UTF-8 byte order, which is code point order.
    CodePoint,
    /// A libc locale (`collcollate` / `datcollate`), e.g. `en_US.UTF-8`.
    Libc(String),
    /// An ICU locale (`colliculocale` / `daticulocale`), e.g. `en-US` or `und`.
    Icu(String),
}

impl Spec {
    /// The spec of provider `provider` (`c` libc, `i` ICU) with its libc and ICU locales.
    pub fn from_catalog(provider: &str, collate: &str, icu_locale: &str) -> Result<Spec, String> {
        match provider {
            "c" if is_code_point_locale(collate) => Ok(Spec::CodePoint),
            "c" => Ok(Spec::Libc(collate.to_string())),
            "i" if icu_locale.is_empty() => Err("an ICU collation without a locale".into()),
            "i" => Ok(Spec::Icu(icu_locale.to_string())),
            other => Err(format!("collation provider {other:?}")),
        }
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spec::CodePoint => f.write_str("code point order"),
            Spec::Libc(name) => write!(f, "libc locale {name}"),
            Spec::Icu(locale) => write!(f, "ICU locale {locale}"),
        }
    }
}

/// C, POSIX and the C.UTF-8 spellings: code point order.
fn is_code_point_locale(name: &str) -> bool {
    matches!(name, "C" | "POSIX")
        || name.eq_ignore_ascii_case("C.UTF-8")
        || name.eq_ignore_ascii_case("C.utf8")
}

/// A comparison of text values (valid UTF-8 as a UTF8 database sends them).
pub enum Collator {
    CodePoint,
    Libc(LibcLocale),
    Icu(IcuCollator),
}

impl std::fmt::Debug for Collator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Collator::CodePoint => f.write_str("CodePoint"),
            Collator::Libc(l) => write!(f, "Libc({})", l.name),
            Collator::Icu(c) => write!(f, "Icu({})", c.locale),
        }
    }
}

impl Collator {
    /// The collator for `spec`; `icu` loads ICU when the spec needs it.
    pub fn new(spec: &Spec, icu: impl FnOnce() -> Option<Arc<Icu>>) -> Result<Collator, String> {
        match spec {
            Spec::CodePoint => Ok(Collator::CodePoint),
            Spec::Libc(name) => LibcLocale::new(name).map(Collator::Libc),
            Spec::Icu(locale) => {
                let icu = icu().ok_or("the ICU library (libicui18n) cannot be loaded here")?;
                IcuCollator::new(icu, locale).map(Collator::Icu)
            }
        }
    }

    /// Compares as PostgreSQL's deterministic collations do: the collation's order, ties
    /// between different strings broken by their bytes (`strcmp`).
    pub fn compare(&self, a: &[u8], b: &[u8]) -> Ordering {
        if a == b {
            return Ordering::Equal;
        }
        let order = match self {
            Collator::CodePoint => return a.cmp(b),
            Collator::Libc(locale) => locale.compare(a, b),
            Collator::Icu(collator) => collator.compare(a, b),
        };
        order.then_with(|| a.cmp(b))
    }
}

extern "C" {
    // glibc (and other POSIX 2008 C libraries) export it; the libc crate does not declare it.
    fn strcoll_l(a: *const c_char, b: *const c_char, locale: libc::locale_t) -> c_int;
}

/// A libc locale handle for LC_COLLATE (`newlocale`), freed on drop.
pub struct LibcLocale {
    name: String,
    handle: libc::locale_t,
}

// SAFETY: a locale_t is never modified after newlocale returns it; strcoll_l only reads it, and
// POSIX allows using one locale object from several threads at once.
unsafe impl Send for LibcLocale {}
// SAFETY: as above: shared use is read-only.
unsafe impl Sync for LibcLocale {}

impl LibcLocale {
    pub fn new(name: &str) -> Result<LibcLocale, String> {
        let cname = CString::new(name).map_err(|_| format!("locale name {name:?}"))?;
        // SAFETY: cname is a valid C string; a null base asks for a new object.
        let handle =
            unsafe { libc::newlocale(libc::LC_COLLATE_MASK, cname.as_ptr(), std::ptr::null_mut()) };
        if handle.is_null() {
            return Err(format!(
                "the C library has no locale {name} on the machine running pgshard \
                 (generate it with locale-gen or localedef)"
            ));
        }
        Ok(LibcLocale {
            name: name.to_string(),
            handle,
        })
    }

    fn compare(&self, a: &[u8], b: &[u8]) -> Ordering {
        // Text values never hold NUL; one that did could not be compared as the server does.
        with_c_string(a, |a| {
            with_c_string(b, |b| {
                // SAFETY: both are NUL-terminated and live through the call; the handle is valid.
                let r = unsafe { strcoll_l(a, b, self.handle) };
                r.cmp(&0)
            })
        })
        .flatten()
        .unwrap_or(Ordering::Equal)
    }
}

/// Calls `f` with `value` NUL-terminated: copied to the stack when short, to the heap when long;
/// `None` when it holds a NUL.
fn with_c_string<R>(value: &[u8], f: impl FnOnce(*const c_char) -> R) -> Option<R> {
    const SHORT: usize = 256;
    if value.contains(&0) {
        return None;
    }
    if value.len() < SHORT {
        let mut buffer = [0u8; SHORT];
        buffer[..value.len()].copy_from_slice(value);
        return Some(f(buffer.as_ptr().cast()));
    }
    let owned = CString::new(value).ok()?;
    Some(f(owned.as_ptr()))
}

impl Drop for LibcLocale {
    fn drop(&mut self) {
        // SAFETY: the handle came from newlocale and is freed once.
        unsafe { libc::freelocale(self.handle) }
    }
}

type UCollator = c_void;
type OpenFn = unsafe extern "C" fn(*const c_char, *mut c_int) -> *mut UCollator;
type CloseFn = unsafe extern "C" fn(*mut UCollator);
type StrcollUtf8Fn = unsafe extern "C" fn(
    *const UCollator,
    *const c_char,
    i32,
    *const c_char,
    i32,
    *mut c_int,
) -> c_int;

/// The system ICU library (the one PostgreSQL links), loaded with `dlopen`: no build-time
/// dependency, and the same collation data as a server on the same machine.
pub struct Icu {
    pub version: u32,
    open: OpenFn,
    close: CloseFn,
    strcoll_utf8: StrcollUtf8Fn,
}

impl Icu {
    /// Loads `libicui18n.so.N` for the newest N found (ICU's symbols carry the `_N` suffix).
    pub fn load() -> Option<Icu> {
        (50..=99u32).rev().find_map(Icu::load_version)
    }

    fn load_version(version: u32) -> Option<Icu> {
        let file = CString::new(format!("libicui18n.so.{version}")).ok()?;
        // SAFETY: a valid C string; RTLD_NOW resolves everything at once. The library stays
        // loaded for the life of the process (never dlclosed), so the pointers stay valid.
        let lib = unsafe { libc::dlopen(file.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if lib.is_null() {
            return None;
        }
        let symbol = |name: &str| -> Option<*mut c_void> {
            let name = CString::new(format!("{name}_{version}")).ok()?;
            // SAFETY: lib is a live handle and name a valid C string.
            let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
            (!p.is_null()).then_some(p)
        };
        let (open, close, strcoll) = (
            symbol("ucol_open")?,
            symbol("ucol_close")?,
            symbol("ucol_strcollUTF8")?,
        );
        // SAFETY: these are ICU's documented C signatures for these symbols.
        unsafe {
            Some(Icu {
                version,
                open: std::mem::transmute::<*mut c_void, OpenFn>(open),
                close: std::mem::transmute::<*mut c_void, CloseFn>(close),
                strcoll_utf8: std::mem::transmute::<*mut c_void, StrcollUtf8Fn>(strcoll),
            })
        }
    }
}

/// An ICU collator for one locale, closed on drop.
pub struct IcuCollator {
    icu: Arc<Icu>,
    locale: String,
    handle: *mut UCollator,
}

// SAFETY: ICU documents ucol_strcoll* as thread-safe on a collator that is not being modified;
// nothing modifies it after ucol_open.
unsafe impl Send for IcuCollator {}
// SAFETY: as above.
unsafe impl Sync for IcuCollator {}

impl IcuCollator {
    pub fn new(icu: Arc<Icu>, locale: &str) -> Result<IcuCollator, String> {
        let name = CString::new(locale).map_err(|_| format!("ICU locale {locale:?}"))?;
        let mut status: c_int = 0;
        // SAFETY: valid C string and status pointer.
        let handle = unsafe { (icu.open)(name.as_ptr(), &mut status) };
        // ICU error codes are positive; warnings (e.g. a fallback locale) are negative.
        if handle.is_null() || status > 0 {
            return Err(format!(
                "ICU cannot open a collator for {locale} (error {status})"
            ));
        }
        Ok(IcuCollator {
            icu,
            locale: locale.to_string(),
            handle,
        })
    }

    fn compare(&self, a: &[u8], b: &[u8]) -> Ordering {
        let (Ok(la), Ok(lb)) = (i32::try_from(a.len()), i32::try_from(b.len())) else {
            return Ordering::Equal;
        };
        let mut status: c_int = 0;
        // SAFETY: pointers and lengths describe live slices; the collator is open.
        let r = unsafe {
            (self.icu.strcoll_utf8)(
                self.handle,
                a.as_ptr().cast(),
                la,
                b.as_ptr().cast(),
                lb,
                &mut status,
            )
        };
        r.cmp(&0)
    }
}

impl Drop for IcuCollator {
    fn drop(&mut self) {
        // SAFETY: opened by ucol_open, closed once.
        unsafe { (self.icu.close)(self.handle) }
    }
}

/// Columns and domains with a collation other than the database's, per shard (learned at
/// start).
#[derive(Debug, Default)]
pub struct Columns {
    /// Per shard: (relation OID, column number) → collation name as SQL.
    pub per_shard: Vec<HashMap<(u32, i16), String>>,
    /// Per shard: the newest relation OID when they were learned; a newer relation's columns
    /// are not known.
    pub known_up_to: Vec<u32>,
    /// Why an expression's collation cannot be assumed to be the database's, if it cannot: a
    /// column or domain whose collation orders differently exists.
    pub uncertain: Option<String>,
}

impl Columns {
    /// Relation `relation` of shard `shard` is newer than what was learned.
    fn stale(&self, shard: usize, relation: u32) -> bool {
        relation != 0 && self.known_up_to.get(shard).is_none_or(|&k| relation > k)
    }
}

/// A comparator, or why there is none.
pub type Usable = Result<Arc<Collator>, String>;

/// How one statement may order text: the database's collation, the named collations it uses
/// and the columns' own. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TextRules(Option<Arc<TextInner>>);

#[derive(Debug)]
struct TextInner {
    database: Usable,
    named: HashMap<String, Usable>,
    columns: Option<Arc<Columns>>,
}

/// type `name`: its own collation is C.
const NAME: u32 = 19;

/// Why text is not ordered before the shards' collations are known.
const NOT_LEARNED: &str = "pgshard has not verified the shards' collations";

impl TextRules {
    pub fn new(
        database: Usable,
        named: HashMap<String, Usable>,
        columns: Option<Arc<Columns>>,
    ) -> Self {
        TextRules(Some(Arc::new(TextInner {
            database,
            named,
            columns,
        })))
    }

    /// Rules where every text value orders under `database` (tests, and C databases).
    pub fn only(database: Collator) -> Self {
        TextRules::new(Ok(Arc::new(database)), HashMap::new(), Some(Arc::default()))
    }

    fn inner(&self) -> Result<&TextInner, String> {
        self.0.as_deref().ok_or_else(|| NOT_LEARNED.to_string())
    }

    /// The collation of an expression of type `oid` with no COLLATE (the type's or the
    /// database's), unless columns with other collations make it unknown.
    pub fn expression(&self, oid: u32) -> Usable {
        let inner = self.inner()?;
        if let Some(why) = inner.columns.as_ref().and_then(|c| c.uncertain.as_ref()) {
            return Err(why.clone());
        }
        if oid == NAME {
            return Ok(Arc::new(Collator::CodePoint));
        }
        inner.database.clone()
    }

    /// The collation of a result column from (table OID, column number) `origin` as shard
    /// `shard` described it; an expression's when it is no table column.
    pub fn column(&self, oid: u32, origin: (u32, i16), shard: Option<usize>) -> Usable {
        let inner = self.inner()?;
        let (Some(shard), Some(columns), true) = (shard, &inner.columns, origin.0 != 0) else {
            return self.expression(oid);
        };
        match columns.per_shard.get(shard).and_then(|m| m.get(&origin)) {
            Some(name) => self.named(name),
            None if columns.stale(shard, origin.0) => Err(format!(
                "its table (OID {}) is newer than what pgshard learned of the columns' collations",
                origin.0
            )),
            None if oid == NAME => Ok(Arc::new(Collator::CodePoint)),
            None => inner.database.clone(),
        }
    }

    /// A relation among `origins` (of shard `shard`'s description) newer than the learned
    /// column collations, if there is one.
    pub fn stale_relation(&self, origins: &[(u32, i16)], shard: Option<usize>) -> Option<u32> {
        let columns = self.0.as_deref()?.columns.as_deref()?;
        let shard = shard?;
        origins
            .iter()
            .map(|&(relation, _)| relation)
            .find(|&relation| columns.stale(shard, relation))
    }

    /// Collation `name` (as the statement or the catalog writes it).
    pub fn named(&self, name: &str) -> Usable {
        let inner = self.inner()?;
        match inner.named.get(name) {
            Some(usable) => usable.clone(),
            None => Err(format!("collation {name} has not been verified")),
        }
    }
}

/// Awkward strings whose order must agree between pgshard and every shard: case, accents,
/// punctuation, spaces, digits, the empty string, several scripts, emoji, ligatures, and
/// strings a collation finds equal though their bytes differ (composed and decomposed forms).
pub const PROBE: &[&str] = &[
    "",
    " ",
    "  ",
    "\t",
    "a",
    "A",
    "b",
    "B",
    "ab",
    "aB",
    "Ab",
    "AB",
    "a b",
    "a-b",
    "a_b",
    "ab ",
    "a.b",
    "a,b",
    "a'b",
    "ab-",
    "-ab",
    "co-op",
    "coop",
    "co op",
    "coöp",
    "e",
    "E",
    "é",
    "É",
    "ê",
    "ë",
    "è",
    "f",
    "ß",
    "ss",
    "SS",
    "straße",
    "strasse",
    "Straße",
    "æ",
    "ae",
    "Æ",
    "AE",
    "ø",
    "o",
    "ö",
    "oe",
    "Ö",
    "z",
    "Z",
    "å",
    "Å",
    "A\u{30A}",
    "a\u{308}",
    "ä",
    "ǅ",
    "ǆ",
    "Ǆ",
    "ı",
    "i",
    "I",
    "İ",
    "ł",
    "l",
    "đ",
    "ð",
    "þ",
    "th",
    "ﬁ",
    "fi",
    "ﬀ",
    "½",
    "1/2",
    "Ⅻ",
    "0",
    "1",
    "10",
    "2",
    "9",
    "09",
    "a1",
    "a10",
    "a2",
    "1a",
    "-1",
    "+1",
    "!",
    "#",
    "$",
    "&",
    "*",
    "'",
    "\"",
    ".",
    ",",
    ";",
    ":",
    "?",
    "~",
    "@",
    "(",
    ")",
    "[",
    "{",
    "_",
    "-",
    "\u{a0}",
    "résumé",
    "resume",
    "Resume",
    "RESUME",
    "naïve",
    "naive",
    "Ω",
    "ω",
    "Ωmega",
    "α",
    "Я",
    "я",
    "ж",
    "Ж",
    "日本",
    "中文",
    "한국어",
    "ひらがな",
    "カタカナ",
    "עברית",
    "العربية",
    "हिन्दी",
    "ไทย",
    "😀",
    "😀a",
    "a😀",
    "👍",
    "👍🏽",
    "\u{fffd}",
    "zz",
    "ZZ",
    "zZ",
    "Zz",
];

/// Sorts the probe set with `collator` (what pgshard would do).
pub fn probe_order(collator: &Collator) -> Vec<&'static str> {
    let mut sorted = PROBE.to_vec();
    sorted.sort_by(|a, b| collator.compare(a.as_bytes(), b.as_bytes()));
    sorted
}

/// Where a shard's order of the probe set differs from `collator`'s, if it does: the first
/// position, and both values there.
pub fn probe_difference(collator: &Collator, shard_order: &[String]) -> Option<String> {
    let ours = probe_order(collator);
    if shard_order.len() != ours.len() {
        return Some(format!(
            "the shard returned {} of the {} probe strings",
            shard_order.len(),
            ours.len()
        ));
    }
    let (i, (theirs, mine)) = shard_order
        .iter()
        .zip(&ours)
        .enumerate()
        .find(|(_, (t, m))| t.as_str() != **m)?;
    Some(format!(
        "at position {i} of the probe set the shard sorts {theirs:?} where pgshard sorts {mine:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(c: &Collator, values: &[&'static str]) -> Vec<&'static str> {
        let mut v = values.to_vec();
        v.sort_by(|a, b| c.compare(a.as_bytes(), b.as_bytes()));
        v
    }

    #[test]
    fn c_posix_and_c_utf8_are_code_point_order() {
        for name in ["C", "POSIX", "C.UTF-8", "C.utf8"] {
            assert_eq!(Spec::from_catalog("c", name, ""), Ok(Spec::CodePoint));
        }
        assert_eq!(
            Spec::from_catalog("c", "en_US.UTF-8", ""),
            Ok(Spec::Libc("en_US.UTF-8".into()))
        );
        assert_eq!(
            Spec::from_catalog("i", "C", "und"),
            Ok(Spec::Icu("und".into()))
        );
        let c = Collator::CodePoint;
        // U+FFFD (3 bytes) before U+1F600 (4 bytes): byte order is code point order in UTF-8.
        assert_eq!(
            sorted(&c, &["😀", "\u{fffd}", "é", "z", "Z", ""]),
            ["", "Z", "z", "é", "\u{fffd}", "😀"]
        );
    }

    #[test]
    fn the_libc_c_utf8_locale_agrees_with_code_point_order_on_the_probe() {
        let Ok(locale) = LibcLocale::new("C.UTF-8") else {
            return; // a C library without C.UTF-8 (musl has it; old glibc may not)
        };
        let libc = Collator::Libc(locale);
        let shard: Vec<String> = probe_order(&libc).iter().map(|s| s.to_string()).collect();
        assert_eq!(probe_difference(&Collator::CodePoint, &shard), None);
    }

    #[test]
    fn an_unknown_libc_locale_is_an_error_naming_it() {
        let err = LibcLocale::new("xx_NOPE.UTF-8").err().unwrap();
        assert!(err.contains("xx_NOPE.UTF-8"), "{err}");
    }

    #[test]
    fn equal_under_the_collation_means_ordered_by_bytes() {
        let Some(icu) = Icu::load() else { return };
        let c = Collator::new(&Spec::Icu("und".into()), || Some(Arc::new(icu))).unwrap();
        // Å precomposed (C3 85) and A + combining ring (41 CC 8A) are canonically equivalent.
        assert_eq!(
            c.compare("Å".as_bytes(), "A\u{30A}".as_bytes()),
            Ordering::Greater
        );
        assert_eq!(
            sorted(&c, &["b", "B", "a", "A", "é", "e"]),
            ["a", "A", "b", "B", "e", "é"]
        );
    }

    #[test]
    fn a_libc_locale_orders_case_and_accents_together_when_installed() {
        let Ok(locale) = LibcLocale::new("en_US.UTF-8") else {
            return; // not generated on this machine (.ci/run generates it)
        };
        let c = Collator::Libc(locale);
        assert_eq!(
            sorted(&c, &["b", "B", "a", "é", "e", "A"]),
            ["a", "A", "b", "B", "e", "é"]
        );
    }

    #[test]
    fn a_column_orders_by_its_own_collation_and_expressions_by_the_databases() {
        let own = Arc::new(Collator::Libc(LibcLocale::new("C.UTF-8").unwrap()));
        let columns = Columns {
            per_shard: vec![HashMap::from([((16400, 2), "own".to_string())])],
            known_up_to: vec![16500],
            uncertain: None,
        };
        let named = HashMap::from([("own".to_string(), Ok(own))]);
        let rules = TextRules::new(
            Ok(Arc::new(Collator::CodePoint)),
            named,
            Some(Arc::new(columns)),
        );
        let kind = |u: Usable| u.map(|c| format!("{c:?}"));
        assert_eq!(
            kind(rules.column(25, (16400, 2), Some(0))),
            Ok("Libc(C.UTF-8)".into())
        );
        assert_eq!(
            kind(rules.column(25, (16400, 3), Some(0))),
            Ok("CodePoint".into())
        );
        assert_eq!(
            kind(rules.column(25, (0, 0), Some(0))),
            Ok("CodePoint".into())
        );
        // A table newer than what was learned: not guessed.
        assert!(rules.column(25, (16600, 1), Some(0)).is_err());
        assert_eq!(
            rules.stale_relation(&[(16400, 1), (16600, 1)], Some(0)),
            Some(16600)
        );
        assert!(rules.named("\"other\"").is_err(), "never verified");
        assert!(
            TextRules::default().expression(25).is_err(),
            "nothing learned yet"
        );
    }

    #[test]
    fn columns_ordering_unlike_the_database_make_expressions_unknown() {
        let columns = Columns {
            per_shard: vec![HashMap::new()],
            known_up_to: vec![0],
            uncertain: Some("column c has collation x".into()),
        };
        let rules = TextRules::new(
            Ok(Arc::new(Collator::CodePoint)),
            HashMap::new(),
            Some(Arc::new(columns)),
        );
        assert_eq!(
            rules.expression(25).unwrap_err(),
            "column c has collation x"
        );
    }

    #[test]
    fn a_probe_difference_names_the_position_and_values() {
        let mut shard: Vec<String> = probe_order(&Collator::CodePoint)
            .iter()
            .map(|s| s.to_string())
            .collect();
        shard.swap(3, 4);
        let why = probe_difference(&Collator::CodePoint, &shard).unwrap();
        assert!(why.starts_with("at position 3 of the probe set"), "{why}");
    }
}
