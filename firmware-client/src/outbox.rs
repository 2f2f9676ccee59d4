//! The outbox: every reading the hub has not acknowledged yet.
//!
//! Durability is a contract (see `DESIGN.md`): a reading leaves the outbox
//! only when an Ack (or a Welcome's `last_stored_seq`) says the hub committed
//! the frame that carries it. The outbox is two rings over a [`Storage`]:
//!
//! - readings, oldest first: first those already built into frames, then the
//!   *pending* ones not yet in any frame;
//! - built frames, oldest first: first those *in flight* on the current
//!   connection, then those waiting to be (re)sent.
//!
//! A frame is built when it is first sent, so its size honours the limits the
//! hub announced most recently, and its sequence number is known by then (a
//! freshly booted device learns it from Welcome). From that moment its
//! sequence number, base time and readings are fixed; a resend encodes the
//! same readings again, and postcard's deterministic encoding makes the bytes
//! identical without keeping a copy of them.

use crate::storage::{Entry, FrameSlot, Storage};
use schema::{EncodeError, List, Reading, Telemetry, Uplink, Value, encode_uplink};

/// Most bytes one reading takes in a Telemetry frame: sensor id (varint u16,
/// 3), offset (varint u32, 5), value (tag 1 + zigzag varint i64, 10).
pub const MAX_READING_BYTES: usize = 19;

/// Most bytes a Telemetry frame takes besides its readings: frame tag (1),
/// seq and base time (varint u64, 10 each), reading count (varint, 5).
pub const MAX_TELEMETRY_OVERHEAD_BYTES: usize = 26;

/// Bytes that always suffice to encode a Telemetry frame of `readings` readings.
pub const fn max_telemetry_bytes(readings: usize) -> usize {
    MAX_TELEMETRY_OVERHEAD_BYTES + MAX_READING_BYTES * readings
}

/// How many readings a Telemetry frame can carry within `bytes` bytes.
pub const fn readings_within(bytes: usize) -> usize {
    bytes.saturating_sub(MAX_TELEMETRY_OVERHEAD_BYTES) / MAX_READING_BYTES
}

/// The outbox holds as many unacknowledged readings as it has room for.
///
/// Nothing was stored; the caller keeps the reading and decides whether to
/// wait for acks or to give up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxFull;

impl core::fmt::Display for OutboxFull {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("outbox full: every slot holds an unacknowledged reading")
    }
}

impl core::error::Error for OutboxFull {}

/// A frame the hub acknowledged, reported once as it leaves the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckedFrame {
    /// Its sequence number.
    pub seq: u64,
    /// How many readings it carried.
    pub readings: u32,
    /// The `now` passed when it was most recently sent (caller's time unit).
    pub sent_at: u64,
}

/// What one acknowledgement removed from the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckSummary {
    /// Frames removed.
    pub frames: usize,
    /// Readings removed.
    pub readings: usize,
}

/// A telemetry frame to put on the wire now, encoded in the caller's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'b> {
    /// The encoded frame: one WebSocket binary message.
    pub bytes: &'b [u8],
    /// Its sequence number.
    pub seq: u64,
    /// How many readings it carries.
    pub readings: u32,
    /// True when this frame was sent before (on an earlier connection).
    pub resend: bool,
}

/// Unacknowledged readings and the frames built from them; see the module docs.
#[derive(Debug, Clone)]
pub struct Outbox<S> {
    storage: S,
    /// Ring index of the oldest reading.
    head: usize,
    /// Readings held.
    len: usize,
    /// Readings (from `head`) that belong to built frames.
    framed: usize,
    /// Ring index of the oldest frame.
    f_head: usize,
    /// Frames held.
    f_len: usize,
    /// Frames (from `f_head`) sent on the current connection.
    in_flight: usize,
    /// Readings carried by the in-flight frames.
    in_flight_entries: usize,
    /// Sequence number of the next frame to build; `None` until the hub tells
    /// a freshly booted device where to start.
    next_seq: Option<u64>,
}

/// `i % len` for `i < 2 * len`.
fn wrap(i: usize, len: usize) -> usize {
    if i >= len { i - len } else { i }
}

fn offset(time_ms: u64, base_ms: u64) -> u32 {
    // Frames are built so that every offset fits; saturate rather than wrap
    // if a broken storage ever broke that.
    u32::try_from(time_ms.saturating_sub(base_ms)).unwrap_or(u32::MAX)
}

impl<S: Storage> Outbox<S> {
    /// An empty outbox over `storage`.
    ///
    /// `next_seq` is the sequence number the device remembers using next (if
    /// it keeps one across boots); `None` lets the first Welcome decide
    /// (`last_stored_seq + 1`).
    pub fn new(storage: S, next_seq: Option<u64>) -> Self {
        Outbox {
            storage,
            head: 0,
            len: 0,
            framed: 0,
            f_head: 0,
            f_len: 0,
            in_flight: 0,
            in_flight_entries: 0,
            next_seq,
        }
    }

    /// Most readings the outbox holds.
    pub fn capacity(&self) -> usize {
        self.storage.entries().len()
    }

    /// Most frames that can await an ack at once.
    pub fn window(&self) -> usize {
        self.storage.frames().len()
    }

    /// Most readings one frame can carry, as the storage allows.
    pub fn max_batch(&self) -> usize {
        self.storage.scratch().len()
    }

    /// Unacknowledged readings held (pending plus framed).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no reading awaits an ack.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when a push would fail.
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity()
    }

    /// Readings not yet built into a frame.
    pub fn pending(&self) -> usize {
        self.len - self.framed
    }

    /// Built frames awaiting an ack (in flight or waiting to be resent).
    pub fn frames(&self) -> usize {
        self.f_len
    }

    /// Frames sent on the current connection and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Sequence number the next new frame will get, if known yet.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// Add a reading; returns how many readings are now pending (not framed).
    ///
    /// Fails, storing nothing, when the outbox is full.
    pub fn push(&mut self, sensor: u16, time_ms: u64, value: Value) -> Result<usize, OutboxFull> {
        let capacity = self.capacity();
        if self.len >= capacity {
            return Err(OutboxFull);
        }
        let index = wrap(self.head + self.len, capacity);
        self.storage.parts().entries[index] = Entry {
            time_ms,
            value,
            sensor,
        };
        self.len += 1;
        Ok(self.len - self.framed)
    }

    /// The next frame to send, if any, encoded into `buf`.
    ///
    /// Frames waiting for a resend go first, unchanged. Otherwise a new frame
    /// is built from pending readings: at most `batch` readings (also capped
    /// by the storage and by what fits in `buf`), and only a full one unless
    /// `allow_partial`. Nothing is sent while `window` frames (capped by the
    /// storage) are in flight, or before the sequence number is known. `now`
    /// is stored with the frame and reported back in [`AckedFrame::sent_at`].
    ///
    /// On an error nothing changes.
    pub fn next_transmit<'b>(
        &mut self,
        batch: usize,
        window: usize,
        allow_partial: bool,
        now: u64,
        buf: &'b mut [u8],
    ) -> Result<Option<Transmit<'b>>, EncodeError> {
        if self.in_flight >= window.min(self.window()) {
            return Ok(None);
        }
        if self.in_flight < self.f_len {
            return self.resend(now, buf).map(Some);
        }
        self.build(batch, allow_partial, now, buf)
    }

    fn resend<'b>(&mut self, now: u64, buf: &'b mut [u8]) -> Result<Transmit<'b>, EncodeError> {
        let capacity = self.capacity();
        let window = self.window();
        let slot = wrap(self.f_head + self.in_flight, window);
        let first = self.head + self.in_flight_entries;
        let parts = self.storage.parts();
        let frame = parts.frames[slot];
        let n = frame.len as usize;
        let Some(scratch) = parts.scratch.get_mut(..n) else {
            return Err(EncodeError::BufferFull);
        };
        for (j, reading) in scratch.iter_mut().enumerate() {
            let entry = parts.entries[wrap(first + j, capacity)];
            *reading = Reading {
                sensor: entry.sensor,
                offset_ms: offset(entry.time_ms, frame.base_time_ms),
                value: entry.value,
            };
        }
        let bytes = encode(frame.seq, frame.base_time_ms, scratch, buf)?;
        parts.frames[slot].sent_at = now;
        self.in_flight += 1;
        self.in_flight_entries += n;
        Ok(Transmit {
            bytes,
            seq: frame.seq,
            readings: frame.len,
            resend: true,
        })
    }

    fn build<'b>(
        &mut self,
        batch: usize,
        allow_partial: bool,
        now: u64,
        buf: &'b mut [u8],
    ) -> Result<Option<Transmit<'b>>, EncodeError> {
        let pending = self.pending();
        let Some(seq) = self.next_seq else {
            return Ok(None);
        };
        if pending == 0 || self.f_len >= self.window() {
            return Ok(None);
        }
        let batch = batch.min(self.max_batch()).min(readings_within(buf.len()));
        if batch == 0 {
            return Err(EncodeError::BufferFull);
        }
        if pending < batch && !allow_partial {
            return Ok(None);
        }
        let capacity = self.capacity();
        let window = self.window();
        let first = self.head + self.framed;
        let take = pending.min(batch);
        let parts = self.storage.parts();

        // The frame's base time is its earliest reading; stop early if the
        // readings span more than a u32 offset can express (49 days).
        let t0 = parts.entries[wrap(first, capacity)].time_ms;
        let (mut lo, mut hi, mut n) = (t0, t0, 1);
        while n < take {
            let t = parts.entries[wrap(first + n, capacity)].time_ms;
            let (new_lo, new_hi) = (lo.min(t), hi.max(t));
            if new_hi - new_lo > u64::from(u32::MAX) {
                break;
            }
            (lo, hi, n) = (new_lo, new_hi, n + 1);
        }
        let scratch = &mut parts.scratch[..n];
        for (j, reading) in scratch.iter_mut().enumerate() {
            let entry = parts.entries[wrap(first + j, capacity)];
            *reading = Reading {
                sensor: entry.sensor,
                offset_ms: offset(entry.time_ms, lo),
                value: entry.value,
            };
        }
        let bytes = encode(seq, lo, scratch, buf)?;
        let len = u32::try_from(n).unwrap_or(u32::MAX);
        parts.frames[wrap(self.f_head + self.f_len, window)] = FrameSlot {
            seq,
            base_time_ms: lo,
            sent_at: now,
            len,
        };
        self.f_len += 1;
        self.framed += n;
        self.in_flight += 1;
        self.in_flight_entries += n;
        self.next_seq = Some(seq.saturating_add(1));
        Ok(Some(Transmit {
            bytes,
            seq,
            readings: len,
            resend: false,
        }))
    }

    /// The hub committed every frame with a sequence number up to `seq`:
    /// drop them, calling `on_frame` for each. Acks for frames already gone
    /// change nothing.
    pub fn ack(&mut self, seq: u64, mut on_frame: impl FnMut(AckedFrame)) -> AckSummary {
        let capacity = self.capacity();
        let window = self.window();
        let mut summary = AckSummary::default();
        while self.f_len > 0 {
            let frame = self.storage.frames()[self.f_head];
            if frame.seq > seq {
                break;
            }
            let n = frame.len as usize;
            self.f_head = wrap(self.f_head + 1, window);
            self.f_len -= 1;
            self.head = wrap(self.head + n, capacity);
            self.len -= n;
            self.framed -= n;
            // In-flight frames are the oldest ones, so the acked frame is one
            // of them if any is in flight.
            if self.in_flight > 0 {
                self.in_flight -= 1;
                self.in_flight_entries -= n;
            }
            summary.frames += 1;
            summary.readings += n;
            on_frame(AckedFrame {
                seq: frame.seq,
                readings: frame.len,
                sent_at: frame.sent_at,
            });
        }
        summary
    }

    /// The connection ended: every frame in flight must be sent again on the
    /// next one (unless its Welcome says it was stored).
    pub fn connection_lost(&mut self) {
        self.in_flight = 0;
        self.in_flight_entries = 0;
    }

    /// A new connection's Welcome said the hub stored everything up to
    /// `last_stored_seq`: drop those frames (reported through `on_frame`),
    /// queue the remaining ones for a resend in order, and make sure new
    /// frames continue above `last_stored_seq`.
    pub fn resume(&mut self, last_stored_seq: u64, on_frame: impl FnMut(AckedFrame)) -> AckSummary {
        self.connection_lost();
        let summary = self.ack(last_stored_seq, on_frame);
        let floor = last_stored_seq.saturating_add(1);
        self.next_seq = Some(self.next_seq.map_or(floor, |next| next.max(floor)));
        summary
    }
}

fn encode<'b>(
    seq: u64,
    base_time_ms: u64,
    readings: &[Reading],
    buf: &'b mut [u8],
) -> Result<&'b [u8], EncodeError> {
    let frame = Uplink::Telemetry(Telemetry {
        seq,
        base_time_ms,
        readings: List::Borrowed(readings),
    });
    encode_uplink(&frame, buf).map(|bytes| &*bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ArrayStorage;
    use schema::decode_uplink;

    type Small = ArrayStorage<16, 4, 8>;

    fn outbox(next_seq: Option<u64>) -> Outbox<Small> {
        Outbox::new(Small::new(), next_seq)
    }

    /// Decode a sent frame: (seq, base, [(sensor, time, value)]).
    fn decode(bytes: &[u8]) -> (u64, u64, Vec<(u16, u64, Value)>) {
        match decode_uplink(bytes).expect("valid frame") {
            Uplink::Telemetry(t) => (
                t.seq,
                t.base_time_ms,
                t.readings
                    .iter()
                    .map(|r| (r.sensor, t.base_time_ms + u64::from(r.offset_ms), r.value))
                    .collect(),
            ),
            other => panic!("not telemetry: {other:?}"),
        }
    }

    /// Send everything the window allows; returns (seq, bytes, resend).
    fn drain(
        outbox: &mut Outbox<Small>,
        batch: usize,
        partial: bool,
        now: u64,
    ) -> Vec<(u64, Vec<u8>, bool)> {
        let mut buf = [0u8; 256];
        let mut sent = Vec::new();
        while let Some(t) = outbox
            .next_transmit(batch, 4, partial, now, &mut buf)
            .expect("encodes")
        {
            sent.push((t.seq, t.bytes.to_vec(), t.resend));
        }
        sent
    }

    fn push_n(outbox: &mut Outbox<Small>, n: u64) {
        for i in 0..n {
            outbox
                .push((i % 3) as u16, 1_000 + i, Value::Int(i as i64))
                .expect("room");
        }
    }

    #[test]
    fn the_size_bounds_hold_for_the_largest_values() {
        let readings = [Reading {
            sensor: u16::MAX,
            offset_ms: u32::MAX,
            value: Value::Int(i64::MIN),
        }; 200];
        let frame = Uplink::Telemetry(Telemetry {
            seq: u64::MAX,
            base_time_ms: u64::MAX,
            readings: List::Borrowed(&readings),
        });
        let bytes = schema::encode_uplink_to_vec(&frame).expect("encodes");
        assert!(bytes.len() <= max_telemetry_bytes(200));
        // Tag, two 10-byte varints, a 2-byte count: the rest is readings,
        // each exactly at the per-reading bound.
        assert_eq!(bytes.len() - 23, 200 * MAX_READING_BYTES);
        assert_eq!(readings_within(max_telemetry_bytes(200)), 200);
    }

    #[test]
    fn pushing_into_a_full_outbox_fails_and_stores_nothing() {
        let mut outbox = outbox(Some(1));
        push_n(&mut outbox, 16);
        assert!(outbox.is_full());
        assert_eq!(outbox.push(0, 5, Value::Bool(true)), Err(OutboxFull));
        assert_eq!(outbox.len(), 16);

        // Acks free room: one frame of 8 acknowledged, 8 slots back.
        let sent = drain(&mut outbox, 8, false, 0);
        assert_eq!(sent.len(), 2);
        outbox.ack(sent[0].0, |_| {});
        assert_eq!(outbox.len(), 8);
        for i in 0..8 {
            outbox
                .push(1, 10_000 + i, Value::Int(0))
                .expect("room again");
        }
        assert_eq!(outbox.push(1, 20_000, Value::Int(0)), Err(OutboxFull));
    }

    #[test]
    fn frames_never_exceed_the_batch_and_partials_wait_unless_allowed() {
        let mut outbox = outbox(Some(1));
        push_n(&mut outbox, 11);
        let full = drain(&mut outbox, 5, false, 0);
        assert_eq!(full.len(), 2, "only full frames without allow_partial");
        for (_, bytes, _) in &full {
            assert_eq!(decode(bytes).2.len(), 5);
        }
        assert_eq!(outbox.pending(), 1);
        let partial = drain(&mut outbox, 5, true, 0);
        assert_eq!(partial.len(), 1);
        assert_eq!(decode(&partial[0].1).2.len(), 1);

        // The storage's scratch (8) caps a larger batch.
        let mut outbox = Outbox::new(Small::new(), Some(1));
        push_n(&mut outbox, 12);
        for (_, bytes, _) in drain(&mut outbox, 100, true, 0) {
            assert!(decode(&bytes).2.len() <= 8);
        }
    }

    #[test]
    fn a_small_buffer_caps_the_frame_and_a_tiny_one_is_an_error() {
        let mut outbox = outbox(Some(1));
        push_n(&mut outbox, 8);
        let mut buf = [0u8; max_telemetry_bytes(3)];
        let t = outbox
            .next_transmit(8, 4, true, 0, &mut buf)
            .expect("encodes")
            .expect("a frame");
        assert_eq!(t.readings, 3);
        let mut tiny = [0u8; 10];
        assert_eq!(
            outbox.next_transmit(8, 4, true, 0, &mut tiny),
            Err(EncodeError::BufferFull)
        );
        assert_eq!(outbox.frames(), 1, "a failed encode changes nothing");
    }

    #[test]
    fn frames_carry_every_reading_in_order_with_exact_times() {
        let mut outbox = outbox(Some(7));
        // Out of order across sensors: the base is the earliest time.
        outbox.push(1, 5_000, Value::Float(1.5)).expect("room");
        outbox.push(2, 4_000, Value::Int(-2)).expect("room");
        outbox.push(3, 6_000, Value::Bool(true)).expect("room");
        let sent = drain(&mut outbox, 8, true, 0);
        let (seq, base, readings) = decode(&sent[0].1);
        assert_eq!(seq, 7);
        assert_eq!(base, 4_000);
        assert_eq!(
            readings,
            vec![
                (1, 5_000, Value::Float(1.5)),
                (2, 4_000, Value::Int(-2)),
                (3, 6_000, Value::Bool(true)),
            ]
        );
    }

    #[test]
    fn a_time_span_beyond_u32_offsets_splits_the_frame() {
        let mut outbox = outbox(Some(1));
        let far = u64::from(u32::MAX) + 10;
        outbox.push(1, 100, Value::Int(1)).expect("room");
        outbox.push(1, 200, Value::Int(2)).expect("room");
        outbox.push(1, 100 + far, Value::Int(3)).expect("room");
        let sent = drain(&mut outbox, 8, true, 0);
        assert_eq!(sent.len(), 2);
        assert_eq!(decode(&sent[0].1).2.len(), 2);
        let (_, base, readings) = decode(&sent[1].1);
        assert_eq!(base, 100 + far);
        assert_eq!(readings, vec![(1, 100 + far, Value::Int(3))]);
    }

    #[test]
    fn acks_are_cumulative_and_stale_ones_change_nothing() {
        let mut outbox = outbox(Some(1));
        push_n(&mut outbox, 12);
        let sent = drain(&mut outbox, 3, false, 42);
        assert_eq!(
            sent.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(outbox.in_flight(), 4);

        let mut seen = Vec::new();
        let summary = outbox.ack(2, |f| seen.push(f));
        assert_eq!(
            summary,
            AckSummary {
                frames: 2,
                readings: 6
            }
        );
        assert_eq!(
            seen,
            vec![
                AckedFrame {
                    seq: 1,
                    readings: 3,
                    sent_at: 42
                },
                AckedFrame {
                    seq: 2,
                    readings: 3,
                    sent_at: 42
                },
            ]
        );
        assert_eq!((outbox.len(), outbox.in_flight()), (6, 2));

        assert_eq!(
            outbox.ack(1, |_| panic!("already gone")),
            AckSummary::default()
        );
        assert_eq!(outbox.len(), 6);

        // An ack beyond every frame drops the built ones, not pending readings.
        outbox.push(0, 9_999, Value::Int(0)).expect("room");
        let summary = outbox.ack(1_000, |_| {});
        assert_eq!(summary.frames, 2);
        assert_eq!((outbox.len(), outbox.pending(), outbox.frames()), (1, 1, 0));
    }

    #[test]
    fn the_window_caps_frames_in_flight() {
        let mut outbox = outbox(Some(1));
        push_n(&mut outbox, 16);
        let mut buf = [0u8; 256];
        let mut sent = 0;
        while outbox
            .next_transmit(2, 2, true, 0, &mut buf)
            .expect("encodes")
            .is_some()
        {
            sent += 1;
        }
        assert_eq!(sent, 2);
        outbox.ack(1, |_| {});
        assert!(
            outbox
                .next_transmit(2, 2, true, 0, &mut buf)
                .expect("encodes")
                .is_some()
        );
    }

    #[test]
    fn resume_drops_exactly_the_stored_frames_and_resends_the_rest_unchanged() {
        let mut outbox = outbox(Some(1));
        push_n(&mut outbox, 14);
        let first = drain(&mut outbox, 3, false, 10);
        assert_eq!(
            first.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert!(first.iter().all(|s| !s.2));
        assert_eq!(outbox.pending(), 2);

        // The connection breaks; meanwhile more readings arrive.
        outbox.connection_lost();
        outbox.push(2, 50_000, Value::Int(99)).expect("room");

        let mut dropped = Vec::new();
        let summary = outbox.resume(2, |f| dropped.push(f.seq));
        assert_eq!(dropped, vec![1, 2]);
        assert_eq!(summary.readings, 6);

        let second = drain(&mut outbox, 3, false, 20);
        // Frames 3 and 4 again, byte for byte, then a new frame 5.
        assert_eq!(second[0], (3, first[2].1.clone(), true));
        assert_eq!(second[1], (4, first[3].1.clone(), true));
        assert_eq!((second[2].0, second[2].2), (5, false));
        assert_eq!(second.len(), 3);
        let (_, _, readings) = decode(&second[2].1);
        assert_eq!(readings.last(), Some(&(2, 50_000, Value::Int(99))));

        // Nothing acknowledged is ever sent again.
        outbox.connection_lost();
        outbox.resume(4, |_| {});
        let third = drain(&mut outbox, 3, true, 30);
        assert_eq!(third.iter().map(|s| s.0).collect::<Vec<_>>(), vec![5]);
        assert_eq!(third[0].1, second[2].1);
    }

    #[test]
    fn resume_reports_resent_frames_with_their_latest_send_time() {
        let mut outbox = outbox(Some(1));
        push_n(&mut outbox, 3);
        drain(&mut outbox, 3, false, 10);
        outbox.connection_lost();
        outbox.resume(0, |_| {});
        drain(&mut outbox, 3, false, 99);
        let mut sent_at = 0;
        outbox.ack(1, |f| sent_at = f.sent_at);
        assert_eq!(sent_at, 99);
    }

    #[test]
    fn a_fresh_boot_waits_for_welcome_then_starts_after_last_stored_seq() {
        let mut outbox = outbox(None);
        push_n(&mut outbox, 4);
        assert!(drain(&mut outbox, 4, true, 0).is_empty());
        outbox.resume(41, |_| panic!("nothing to drop"));
        assert_eq!(outbox.next_seq(), Some(42));
        let sent = drain(&mut outbox, 4, true, 0);
        assert_eq!(sent[0].0, 42);
    }

    #[test]
    fn a_remembered_seq_behind_the_hub_jumps_ahead_never_back() {
        let mut outbox = outbox(Some(5));
        outbox.resume(100, |_| {});
        assert_eq!(outbox.next_seq(), Some(101));
        outbox.resume(3, |_| {});
        assert_eq!(outbox.next_seq(), Some(101));
    }

    #[test]
    fn the_rings_wrap_around_many_times() {
        let mut outbox = outbox(Some(1));
        let mut time = 0;
        let mut expected_seq = 1;
        for round in 0..50u64 {
            for _ in 0..(5 + round % 7) {
                time += 1;
                outbox.push(1, time, Value::Int(time as i64)).expect("room");
            }
            let sent = drain(&mut outbox, 3, true, 0);
            let mut readings = Vec::new();
            for (seq, bytes, _) in &sent {
                assert_eq!(*seq, expected_seq);
                expected_seq += 1;
                readings.extend(decode(bytes).2);
            }
            let times: Vec<u64> = readings.iter().map(|r| r.1).collect();
            assert!(times.windows(2).all(|w| w[1] == w[0] + 1));
            assert_eq!(readings.last().map(|r| r.1), Some(time));
            outbox.ack(expected_seq - 1, |_| {});
            assert!(outbox.is_empty());
        }
    }
}
