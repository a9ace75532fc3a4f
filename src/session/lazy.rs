//! Parts of a session that are allocated only while they hold something: a parked session
//! (see `Session::parked`) keeps a null pointer for each. Reading an absent part reads a shared
//! empty value; writing allocates it. Must never hold a part back from the session it belongs
//! to (no sharing, no pooling of parts).

use std::ops::{Deref, DerefMut};

/// A value with an empty state that can be read from a `static`.
pub(super) trait Empty: Default + 'static {
    /// The shared empty value.
    fn empty() -> &'static Self;
    /// Whether `self` holds nothing (it may then be given back).
    fn is_empty(&self) -> bool;
}

/// A `T` that is boxed while it holds something and absent while it does not.
pub(super) struct Lazy<T: Empty>(Option<Box<T>>);

impl<T: Empty> Default for Lazy<T> {
    fn default() -> Self {
        Lazy(None)
    }
}

impl<T: Empty> Lazy<T> {
    /// The value, if allocated: a change that only clears need not allocate it.
    pub(super) fn existing_mut(&mut self) -> Option<&mut T> {
        self.0.as_deref_mut()
    }

    /// Gives the allocation back when the value holds nothing.
    pub(super) fn release_if_empty(&mut self) {
        if self.0.as_deref().is_some_and(T::is_empty) {
            self.0 = None;
        }
    }

    /// Whether the value is allocated now.
    #[cfg(test)]
    pub(super) fn is_allocated(&self) -> bool {
        self.0.is_some()
    }
}

impl<T: Empty> Deref for Lazy<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.0 {
            Some(value) => value,
            None => T::empty(),
        }
    }
}

impl<T: Empty> DerefMut for Lazy<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, PartialEq, Debug)]
    struct Counts {
        values: Vec<u32>,
    }

    static EMPTY: Counts = Counts { values: Vec::new() };

    impl Empty for Counts {
        fn empty() -> &'static Self {
            &EMPTY
        }
        fn is_empty(&self) -> bool {
            self.values.is_empty()
        }
    }

    #[test]
    fn reading_allocates_nothing_writing_does_and_an_empty_value_is_given_back() {
        let mut lazy = Lazy::<Counts>::default();
        assert!(lazy.values.is_empty());
        assert!(!lazy.is_allocated());
        assert!(lazy.existing_mut().is_none());
        lazy.values.push(7);
        assert!(lazy.is_allocated());
        lazy.release_if_empty();
        assert_eq!(lazy.values, vec![7], "a value that holds something is kept");
        lazy.values.clear();
        lazy.release_if_empty();
        assert!(!lazy.is_allocated());
        assert_eq!(*lazy, Counts::default());
    }
}
