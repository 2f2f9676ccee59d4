//! Ingest: the bounded queue from connections to the batch writer, and the writer.
//!
//! Connections hand validated frames to [`IngestHandle::submit`], which waits
//! when the queue is full (backpressure, never a drop). One writer task takes
//! frames in arrival order and commits as many as fit in one batch in a
//! single transaction; an acker task waits until that commit is durable and
//! only then raises each session's acked seq. The two overlap: the writer
//! commits batch N+1 while the disk syncs batch N. Because frames of one
//! session are queued, committed and acked in order, "acked up to N" is
//! always true of every frame ≤ N. A failed commit is retried with backoff
//! and nothing is acked until it succeeds; meanwhile the queue fills and the
//! devices are pushed back. A failed fsync stops the hub (see [`run_writer`]).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::events::{DeviceLabel, HubEvents, TelemetryEvent};
use crate::metrics::{DbOp, Metrics};
use crate::store::{BatchCommit, ReadingRow, Store};

/// One validated Telemetry frame on its way to the database.
pub struct IngestFrame {
    /// The sending device.
    pub device_pk: i64,
    /// The frame's sequence number.
    pub seq: u64,
    /// The readings, already validated (empty for a rejected frame, which is
    /// still acked in order).
    pub readings: Vec<ReadingRow>,
    /// Where the writer reports the highest committed seq of this session.
    pub acked: Arc<watch::Sender<u64>>,
    /// Names of the device and its sensors, for announcing the stored frame.
    pub device: Arc<DeviceLabel>,
}

/// Queue into the batch writers; cloned into every connection.
///
/// With several writers (Postgres: one connection each, run in parallel) the
/// queue is partitioned by device: all frames of one device go to the same
/// writer, so they are still committed and acked in order, and a device's
/// last stored seq never runs ahead of a commit still in flight elsewhere.
#[derive(Clone)]
pub struct IngestHandle {
    partitions: Arc<[mpsc::Sender<IngestFrame>]>,
}

/// One writer's end of the queue.
pub struct IngestReceiver {
    /// Frames in arrival order.
    pub rx: mpsc::Receiver<IngestFrame>,
}

/// A bounded queue of `capacity` frames feeding one writer.
pub fn channel(capacity: usize) -> (IngestHandle, IngestReceiver) {
    let (handle, mut receivers) = partitioned(capacity, 1);
    let receiver = receivers
        .pop()
        .unwrap_or_else(|| unreachable!("one partition was made"));
    (handle, receiver)
}

/// A queue of `capacity` frames in all, split over `writers` (at least 1) partitions.
pub fn partitioned(capacity: usize, writers: usize) -> (IngestHandle, Vec<IngestReceiver>) {
    let writers = writers.max(1);
    let per_writer = capacity.div_ceil(writers).max(1);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..writers)
        .map(|_| {
            let (tx, rx) = mpsc::channel(per_writer);
            (tx, IngestReceiver { rx })
        })
        .unzip();
    (
        IngestHandle {
            partitions: senders.into(),
        },
        receivers,
    )
}

impl IngestHandle {
    /// Waits for room in the device's partition (backpressure), then enqueues.
    pub async fn submit(&self, frame: IngestFrame) -> Result<(), IngestClosed> {
        let index = frame.device_pk.unsigned_abs() % self.partitions.len() as u64;
        let partition = &self.partitions[index as usize];
        partition.send(frame).await.map_err(|_| IngestClosed)
    }

    /// Frames waiting in the queue, all partitions together.
    pub fn depth(&self) -> usize {
        self.partitions
            .iter()
            .map(|tx| tx.max_capacity() - tx.capacity())
            .sum()
    }

    /// A view of the queue's depth for metrics; unlike a clone of the
    /// handle it does not keep the queue open, so the writers still stop.
    pub fn depth_probe(&self) -> IngestDepth {
        IngestDepth(Arc::downgrade(&self.partitions))
    }
}

/// The queue's depth and capacity, read at scrape time (see [`IngestHandle::depth_probe`]).
#[derive(Clone, Debug)]
pub struct IngestDepth(Weak<[mpsc::Sender<IngestFrame>]>);

impl IngestDepth {
    /// Frames waiting now (0 once the queue is gone).
    pub fn depth(&self) -> usize {
        self.0.upgrade().map_or(0, |partitions| {
            partitions
                .iter()
                .map(|tx| tx.max_capacity() - tx.capacity())
                .sum()
        })
    }

    /// Frames the queue holds at most, all partitions together.
    pub fn capacity(&self) -> usize {
        self.0.upgrade().map_or(0, |partitions| {
            partitions.iter().map(|tx| tx.max_capacity()).sum()
        })
    }
}

/// The writer has stopped (the hub is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("ingest writer has stopped")]
pub struct IngestClosed;

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Most readings per transaction (a frame is never split, so a batch may exceed it by one frame).
    pub batch_max_readings: usize,
    /// How long to wait for more frames before committing a partial batch.
    pub linger: Duration,
}

/// First and longest wait between retries of a failed commit.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Committed batches waiting for their fsync; bounds how far the writer runs ahead.
const COMMITS_IN_FLIGHT: usize = 4;

/// Runs until every [`IngestHandle`] is dropped and the queue is empty.
///
/// If a commit cannot be made durable (fsync failed), the batch is never
/// acked and `shutdown` is cancelled: after a failed fsync the kernel may
/// have dropped the data, and no later fsync can prove otherwise, so the hub
/// stops rather than ack anything more; devices resend what was not acked.
pub async fn run_writer(
    store: Store,
    mut queue: IngestReceiver,
    settings: WriterSettings,
    events: HubEvents,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let (commits_tx, commits_rx) = mpsc::channel(COMMITS_IN_FLIGHT);
    let acker = tokio::spawn(run_acker(
        commits_rx,
        events.clone(),
        Arc::clone(&metrics),
        shutdown,
    ));
    let mut frames: Vec<IngestFrame> = Vec::new();
    let mut rows: Vec<ReadingRow> = Vec::with_capacity(settings.batch_max_readings);
    let mut last_seqs: HashMap<i64, u64> = HashMap::new();
    let mut seq_list: Vec<(i64, u64)> = Vec::new();
    while collect_batch(&mut queue.rx, &mut frames, settings).await {
        rows.clear();
        last_seqs.clear();
        for frame in &frames {
            rows.extend_from_slice(&frame.readings);
            let seq = last_seqs.entry(frame.device_pk).or_insert(0);
            *seq = (*seq).max(frame.seq);
        }
        seq_list.clear();
        seq_list.extend(last_seqs.iter().map(|(pk, seq)| (*pk, *seq)));
        let started = Instant::now();
        let commit = commit_with_retry(&store, &rows, &seq_list, &metrics).await;
        let announce = events.wants_telemetry();
        let acks = frames
            .drain(..)
            .map(|f| PendingAck {
                seq: f.seq,
                acked: f.acked,
                announce: (announce && !f.readings.is_empty()).then(|| {
                    Arc::new(TelemetryEvent {
                        device: f.device,
                        seq: f.seq,
                        readings: f.readings,
                    })
                }),
            })
            .collect();
        let batch = Batch {
            commit,
            readings: rows.len(),
            started,
            acks,
        };
        if commits_tx.send(batch).await.is_err() {
            // The acker stopped after a failed fsync: nothing more may be acked.
            break;
        }
    }
    drop(commits_tx);
    let _ = acker.await;
    info!("ingest writer drained and stopped");
}

/// A committed batch on its way to the acker.
struct Batch {
    /// The commit, to wait for durability.
    commit: BatchCommit,
    /// Readings in it, for the metrics.
    readings: usize,
    /// When its commit started, for the commit latency.
    started: Instant,
    /// Its frames.
    acks: Vec<PendingAck>,
}

/// A committed frame waiting for durability: what to ack and what to announce.
struct PendingAck {
    /// The frame's seq.
    seq: u64,
    /// Its session's acked seq.
    acked: Arc<watch::Sender<u64>>,
    /// The stored frame, when someone listens for telemetry.
    announce: Option<Arc<TelemetryEvent>>,
}

/// Acks each committed batch once it is durable, in commit order, then
/// announces its frames (so what integrations see is what is stored).
async fn run_acker(
    mut commits: mpsc::Receiver<Batch>,
    events: HubEvents,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    while let Some(Batch {
        commit,
        readings,
        started,
        acks,
    }) = commits.recv().await
    {
        if let Err(err) = commit.durable().await {
            metrics.database_error(DbOp::Commit);
            error!(error = %err, "could not make a committed batch durable; stopping the hub without acking it");
            shutdown.cancel();
            return;
        }
        metrics.batch_committed(readings, started);

        for PendingAck {
            seq,
            acked,
            announce,
        } in acks
        {
            acked.send_if_modified(|current| {
                let raise = seq > *current;
                if raise {
                    *current = seq;
                }
                raise
            });
            if let Some(event) = announce {
                events.telemetry(event);
            }
        }
    }
}

/// Fills `frames` with the next batch; false when the queue is closed and empty.
async fn collect_batch(
    rx: &mut mpsc::Receiver<IngestFrame>,
    frames: &mut Vec<IngestFrame>,
    settings: WriterSettings,
) -> bool {
    let Some(first) = rx.recv().await else {
        return false;
    };
    let mut readings = first.readings.len();
    frames.push(first);
    let deadline = Instant::now() + settings.linger;
    while readings < settings.batch_max_readings {
        let next = match rx.try_recv() {
            Ok(frame) => Some(frame),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                // A timeout means the linger is over: commit what we have.
                tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten()
            }
        };
        let Some(frame) = next else { break };
        readings += frame.readings.len();
        frames.push(frame);
    }
    true
}

async fn commit_with_retry(
    store: &Store,
    rows: &[ReadingRow],
    last_seqs: &[(i64, u64)],
    metrics: &Metrics,
) -> BatchCommit {
    let mut wait = RETRY_FIRST;
    let started = Instant::now();
    loop {
        match store.commit_batch(rows, last_seqs).await {
            Ok(commit) => {
                debug!(
                    readings = rows.len(),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                return commit;
            }
            Err(err) => {
                metrics.database_error(DbOp::Commit);
                error!(error = %err, readings = rows.len(), retry_in_ms = wait.as_millis() as u64, "batch commit failed; nothing acked, retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}
