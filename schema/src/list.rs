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

/// Most bytes a decoded list reserves before its elements arrive.
///
/// The element count on the wire is only a claim. postcard ignores one
/// longer than the rest of the message, but serde's own `Vec` decoding
/// trusts any other up to 1 MiB: a 60 KB message of junk announcing 60,000
/// readings would cost a megabyte before its first element fails. Here the
/// claim buys at most this much; the vector grows as elements decode.
#[cfg(feature = "alloc")]
pub(crate) const MAX_PREALLOC_BYTES: usize = 4096;

#[cfg(feature = "alloc")]
impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for List<'_, T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_seq(ListVisitor(core::marker::PhantomData))
            .map(List::Owned)
    }
}

/// Decodes a sequence into a vector without trusting its announced length.
#[cfg(feature = "alloc")]
struct ListVisitor<T>(core::marker::PhantomData<T>);

#[cfg(feature = "alloc")]
impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let most = MAX_PREALLOC_BYTES / core::mem::size_of::<T>().max(1);
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(most));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }
}
