//! Backing memory of an [`Outbox`](crate::Outbox).
//!
//! The outbox logic is written once, over slices. Where those slices live is
//! the storage's business: [`ArrayStorage`] holds them inline with capacities
//! fixed at compile time (firmware without an allocator, usually in a
//! `static`), [`HeapStorage`] (feature `std`) allocates them once with
//! capacities chosen at run time. Any other placement (a linker section, a
//! memory pool) only needs to implement [`Storage`].

use schema::{Reading, Value};

/// One reading waiting in the outbox, with its absolute time.
///
/// Opaque: the outbox fills these; a storage only provides room for them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub(crate) time_ms: u64,
    pub(crate) value: Value,
    pub(crate) sensor: u16,
}

impl Entry {
    /// An unused slot, to initialise storage with.
    pub const EMPTY: Entry = Entry {
        time_ms: 0,
        value: Value::Bool(false),
        sensor: 0,
    };
}

/// Bookkeeping of one built, not yet acknowledged telemetry frame.
///
/// Opaque: the outbox fills these; a storage only provides room for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSlot {
    pub(crate) seq: u64,
    pub(crate) base_time_ms: u64,
    pub(crate) sent_at: u64,
    pub(crate) len: u32,
}

impl FrameSlot {
    /// An unused slot, to initialise storage with.
    pub const EMPTY: FrameSlot = FrameSlot {
        seq: 0,
        base_time_ms: 0,
        sent_at: 0,
        len: 0,
    };
}

/// An unused reading, to initialise scratch space with.
pub const EMPTY_READING: Reading = Reading {
    sensor: 0,
    offset_ms: 0,
    value: Value::Bool(false),
};

/// Mutable views of the three areas of a storage, borrowed together.
#[derive(Debug)]
pub struct Parts<'a> {
    /// Ring of readings; its length is the outbox capacity in readings.
    pub entries: &'a mut [Entry],
    /// Ring of built frames awaiting an ack; its length caps the frames in
    /// flight (the send window).
    pub frames: &'a mut [FrameSlot],
    /// Where a frame's readings are laid out contiguously for encoding; its
    /// length caps the readings per frame.
    pub scratch: &'a mut [Reading],
}

/// Memory an [`Outbox`](crate::Outbox) works in. Sizes must not change once
/// the outbox holds data.
pub trait Storage {
    /// All three areas, mutably.
    fn parts(&mut self) -> Parts<'_>;
    /// The reading ring (read-only), for its length.
    fn entries(&self) -> &[Entry];
    /// The frame ring (read-only), for its length.
    fn frames(&self) -> &[FrameSlot];
    /// The scratch area (read-only), for its length.
    fn scratch(&self) -> &[Reading];
}

impl<S: Storage + ?Sized> Storage for &mut S {
    fn parts(&mut self) -> Parts<'_> {
        (**self).parts()
    }
    fn entries(&self) -> &[Entry] {
        (**self).entries()
    }
    fn frames(&self) -> &[FrameSlot] {
        (**self).frames()
    }
    fn scratch(&self) -> &[Reading] {
        (**self).scratch()
    }
}

/// Inline storage sized at compile time: `CAPACITY` readings, `WINDOW`
/// frames in flight, at most `BATCH` readings per frame.
///
/// About `32 * CAPACITY + 32 * WINDOW + 24 * BATCH` bytes; put it in a
/// `static` (it is built by a `const fn`) rather than on a small stack.
#[derive(Debug, Clone)]
pub struct ArrayStorage<const CAPACITY: usize, const WINDOW: usize, const BATCH: usize> {
    entries: [Entry; CAPACITY],
    frames: [FrameSlot; WINDOW],
    scratch: [Reading; BATCH],
}

impl<const CAPACITY: usize, const WINDOW: usize, const BATCH: usize>
    ArrayStorage<CAPACITY, WINDOW, BATCH>
{
    /// Empty storage.
    pub const fn new() -> Self {
        ArrayStorage {
            entries: [Entry::EMPTY; CAPACITY],
            frames: [FrameSlot::EMPTY; WINDOW],
            scratch: [EMPTY_READING; BATCH],
        }
    }
}

impl<const CAPACITY: usize, const WINDOW: usize, const BATCH: usize> Default
    for ArrayStorage<CAPACITY, WINDOW, BATCH>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAPACITY: usize, const WINDOW: usize, const BATCH: usize> Storage
    for ArrayStorage<CAPACITY, WINDOW, BATCH>
{
    fn parts(&mut self) -> Parts<'_> {
        Parts {
            entries: &mut self.entries,
            frames: &mut self.frames,
            scratch: &mut self.scratch,
        }
    }
    fn entries(&self) -> &[Entry] {
        &self.entries
    }
    fn frames(&self) -> &[FrameSlot] {
        &self.frames
    }
    fn scratch(&self) -> &[Reading] {
        &self.scratch
    }
}

/// Heap storage sized at run time, allocated once.
#[cfg(feature = "std")]
#[derive(Debug, Clone)]
pub struct HeapStorage {
    entries: Box<[Entry]>,
    frames: Box<[FrameSlot]>,
    scratch: Box<[Reading]>,
}

#[cfg(feature = "std")]
impl HeapStorage {
    /// Room for `capacity` readings, `window` frames in flight and `batch`
    /// readings per frame (each at least 1).
    pub fn new(capacity: usize, window: usize, batch: usize) -> Self {
        HeapStorage {
            entries: vec![Entry::EMPTY; capacity.max(1)].into_boxed_slice(),
            frames: vec![FrameSlot::EMPTY; window.max(1)].into_boxed_slice(),
            scratch: vec![EMPTY_READING; batch.max(1)].into_boxed_slice(),
        }
    }
}

#[cfg(feature = "std")]
impl Storage for HeapStorage {
    fn parts(&mut self) -> Parts<'_> {
        Parts {
            entries: &mut self.entries,
            frames: &mut self.frames,
            scratch: &mut self.scratch,
        }
    }
    fn entries(&self) -> &[Entry] {
        &self.entries
    }
    fn frames(&self) -> &[FrameSlot] {
        &self.frames
    }
    fn scratch(&self) -> &[Reading] {
        &self.scratch
    }
}
