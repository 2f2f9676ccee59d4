//! Many callers, one statement: a queue in front of a batch database call.
//!
//! A reconnect storm asks the database the same small questions thousands of
//! times a second (whose token is this, open this session, close that one).
//! One statement each costs a round trip each and, on SQLite, a hand-off to
//! sqlx's worker thread and back each; that, not the queries, was most of
//! the hub's CPU per reconnect. A [`Coalescer`] queues the requests and
//! runs them through one batch call: while a batch is in flight the next
//! one gathers, so under load a batch holds whatever arrived meanwhile (up
//! to a maximum), and a lone request still goes out at once, alone.
//!
//! One batch runs at a time per coalescer; each caller gets its own answer,
//! or every caller of a failed batch the same error
//! ([`StoreError::Shared`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// Requests waiting beyond this many make callers wait to enqueue.
const QUEUE_CAPACITY: usize = 65_536;

type Reply<Resp> = oneshot::Sender<Result<Resp, StoreError>>;

/// A handle to the queue in front of one batch call; cheap to clone.
pub struct Coalescer<Req, Resp> {
    queue: mpsc::Sender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Clone for Coalescer<Req, Resp> {
    fn clone(&self) -> Self {
        Coalescer {
            queue: self.queue.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Coalescer<Req, Resp> {
    /// Spawns the task that runs `batch` on up to `max_batch` queued requests
    /// at a time. `batch` answers with one response per request, in order.
    /// The task ends when every handle is dropped.
    pub fn spawn<F, Fut>(max_batch: usize, mut batch: F) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<Resp>, StoreError>> + Send,
    {
        let max_batch = max_batch.max(1);
        let (queue, mut pending) = mpsc::channel::<(Req, Reply<Resp>)>(QUEUE_CAPACITY);
        tokio::spawn(async move {
            let mut taken = Vec::with_capacity(max_batch);
            while pending.recv_many(&mut taken, max_batch).await > 0 {
                let (requests, replies): (Vec<Req>, Vec<Reply<Resp>>) = taken.drain(..).unzip();
                let count = requests.len();
                // A panic in one batch (in the call or its future) fails its
                // callers, not every later one.
                let outcome = AssertUnwindSafe(async { batch(requests).await })
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Corrupt(format!(
                            "a batch of {count} requests panicked"
                        )))
                    })
                    .and_then(|responses| {
                        if responses.len() == count {
                            Ok(responses)
                        } else {
                            Err(StoreError::Corrupt(format!(
                                "a batch of {count} requests got {} answers",
                                responses.len()
                            )))
                        }
                    });
                match outcome {
                    Ok(responses) => {
                        for (reply, response) in replies.into_iter().zip(responses) {
                            // A caller that gave up is no one's concern.
                            let _ = reply.send(Ok(response));
                        }
                    }
                    Err(err) => {
                        let err = Arc::new(err);
                        for reply in replies {
                            let _ = reply.send(Err(StoreError::Shared(Arc::clone(&err))));
                        }
                    }
                }
            }
        });
        Coalescer { queue }
    }

    /// Queues `request` and waits for its answer.
    pub async fn call(&self, request: Req) -> Result<Resp, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || {
            StoreError::Shared(Arc::new(StoreError::Corrupt(
                "the batch task is gone".into(),
            )))
        };
        self.queue
            .send((request, reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn requests_that_arrive_together_share_a_batch_and_get_their_own_answers() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let doubler = Coalescer::spawn(64, move |requests: Vec<u32>| {
            seen.lock().expect("lock").push(requests.len());
            async move {
                // Slow enough that the others queue up behind the first.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(requests.into_iter().map(|r| r * 2).collect())
            }
        });
        let calls: Vec<_> = (0..200u32)
            .map(|i| {
                let doubler = doubler.clone();
                tokio::spawn(async move { (i, doubler.call(i).await) })
            })
            .collect();
        for call in calls {
            let (i, answer) = call.await.expect("task");
            assert_eq!(answer.expect("answer"), i * 2);
        }
        let sizes = sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert!(sizes.iter().all(|&n| n <= 64), "{sizes:?}");
        assert!(sizes.len() < 200, "nothing was batched: {sizes:?}");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_caller_in_it_and_the_next_batch_runs() {
        let failing = Coalescer::spawn(8, |requests: Vec<u32>| async move {
            if requests.contains(&13) {
                Err(StoreError::InvalidCursor)
            } else {
                Ok(requests)
            }
        });
        let err = failing.call(13).await.expect_err("fails");
        assert!(
            matches!(&err, StoreError::Shared(inner) if matches!(**inner, StoreError::InvalidCursor))
        );
        assert_eq!(failing.call(7).await.expect("later batch"), 7);
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_callers_and_the_queue_goes_on() {
        let fragile = Coalescer::spawn(8, |requests: Vec<u32>| async move {
            assert!(!requests.contains(&0), "zero");
            Ok(requests)
        });
        assert!(fragile.call(0).await.is_err());
        assert_eq!(fragile.call(5).await.expect("later batch"), 5);
    }

    #[tokio::test]
    async fn a_batch_that_answers_the_wrong_number_is_an_error_not_a_mixup() {
        let short = Coalescer::spawn(
            8,
            |_requests: Vec<u32>| async move { Ok(Vec::<u32>::new()) },
        );
        assert!(short.call(1).await.is_err());
    }
}
