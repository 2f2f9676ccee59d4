//! A variable-length list that firmware can encode without allocating.
//!
//! On the wire a [`List`] is a postcard sequence: a varint element count
//! followed by the elements, exactly like a `Vec<T>` or `&[T]`. Firmware builds
//! frames from borrowed slices (`List::Borrowed`); the hub decodes frames into
//! owned vectors (`List::Owned`, with the `alloc` feature).

use core::ops::Deref;
use serde::{Serialize, Serializer};

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// A borrowed slice or, with `alloc`, an owned vector; both encode identically
/// and compare equal when their elements do.
#[derive(Debug, Clone)]
pub enum List<'a, T> {
    /// A slice owned by the caller (used when encoding, also in `no_std`).
    Borrowed(&'a [T]),
    /// A vector produced by decoding (needs the `alloc` feature).
    #[cfg(feature = "alloc")]
    Owned(Vec<T>),
}

impl<T> Deref for List<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            List::Borrowed(items) => items,
            #[cfg(feature = "alloc")]
            List::Owned(items) => items,
        }
    }
}

impl<T: PartialEq> PartialEq for List<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<'a, T> From<&'a [T]> for List<'a, T> {
    fn from(items: &'a [T]) -> Self {
        List::Borrowed(items)
    }
}

#[cfg(feature = "alloc")]
impl<T> From<Vec<T>> for List<'_, T> {
    fn from(items: Vec<T>) -> Self {
        List::Owned(items)
    }
}

impl<T: Serialize> Serialize for List<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

#[cfg(feature = "alloc")]
impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for List<'_, T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(deserializer).map(List::Owned)
    }
}
