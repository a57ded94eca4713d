//! Inbox appends that arrive together leave together: one script run (and one round trip)
//! for many sends to users, in the order they came. Nothing waits to fill a batch: a
//! batch is whatever queued while the previous ones were on their way, so at low rates
//! every send runs alone, and under load Redis runs its per-message work without paying
//! the per-call overhead each time (about a third of its CPU per message).
//!
//! Used only where one script may touch every user's keys ([`Conn::batches_appends`]);
//! elsewhere each send is its own [`ops::append`].

use super::client::Conn;
use super::keys::{self, UserKeys};
use super::ops::{self, Appended, UserAppend};
use crate::broker::idempotency::Marker;
use crate::broker::inbox::Retention;
use crate::broker::BrokerError;
use crate::clock::now_ms;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Messages in one script run at most.
const MAX_BATCH: usize = 128;
/// Script runs in flight at once: enough to keep Redis busy while answers travel back.
const IN_FLIGHT: usize = 4;

/// One send waiting for its batch.
struct Job {
    keys: UserKeys,
    body: String,
    marker: Option<(String, Marker)>,
    retention: Retention,
    answer: oneshot::Sender<Result<Appended, BrokerError>>,
}

/// A handle to the batching task; cheap to clone. The task ends when every handle is gone.
#[derive(Clone)]
pub struct Appender {
    conn: Conn,
    jobs: mpsc::UnboundedSender<Job>,
}

impl Appender {
    /// Starts the batching task for `conn` (inside a Tokio runtime).
    pub fn start(conn: Conn) -> Appender {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(conn.clone(), queue));
        Appender { conn, jobs }
    }

    /// Appends `body` to the (app, user) inbox and publishes it live, batched with the
    /// sends that queue at the same time where the connection allows it.
    pub async fn append(
        &self,
        retention: Retention,
        app: &str,
        user: &str,
        body: &str,
        marker: Option<&Marker>,
    ) -> Result<Appended, BrokerError> {
        if !self.conn.batches_appends() {
            return ops::append(&self.conn, retention, app, user, body, marker, now_ms()).await;
        }
        let (answer, answered) = oneshot::channel();
        let job = Job {
            keys: keys::user(app, user),
            body: body.to_owned(),
            marker: marker.map(|m| (ops::user_marker(app, user, m), m.clone())),
            retention,
            answer,
        };
        if self.jobs.send(job).is_err() {
            return Err(BrokerError::Unavailable("redis: appender stopped".into()));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(BrokerError::Unavailable("redis: appender stopped".into())))
    }
}

/// Takes what queued (up to a batch, one retention per batch) and runs it, a few batches
/// at a time.
async fn run(conn: Conn, mut queue: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Job> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(job) => job,
            None => match queue.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let retention = first.retention;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) if job.retention == retention => batch.push(job),
                Ok(job) => {
                    carried = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        let conn = conn.clone();
        tokio::spawn(async move {
            let messages: Vec<UserAppend<'_>> = batch
                .iter()
                .map(|j| UserAppend {
                    keys: &j.keys,
                    body: &j.body,
                    marker: j.marker.as_ref().map(|(key, m)| (key.clone(), m)),
                })
                .collect();
            let result = ops::append_many(&conn, retention, &messages, now_ms()).await;
            drop(messages);
            match result {
                Ok(appended) => {
                    // Each its own answer: one user's broken key fails only that user.
                    for (job, one) in batch.into_iter().zip(appended) {
                        let _ = job.answer.send(one);
                    }
                }
                Err(e) => {
                    for job in batch {
                        let _ = job.answer.send(Err(e.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}
