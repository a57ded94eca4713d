//! A connection's hold on gateway resources between the handshake and the end of its task:
//! the slot in its user's connection limit, the entry in the hub, and the broker topics
//! subscribed for it. Dropping it without [`Admitted::release`] (an upgrade that never
//! completed, a task that panicked) still gives everything back, from a spawned task.

use super::presence_events::{self, Change};
use crate::broker::Lease;
use crate::hub::ConnId;
use crate::state::Shared;
use std::sync::Arc;
use tracing::{debug, warn};

/// Resources held for one connection.
pub struct Admitted {
    shared: Arc<Shared>,
    /// The local connection number.
    pub id: ConnId,
    /// The connection-limit slot.
    pub lease: Lease,
    registered: bool,
    released: bool,
}

impl Admitted {
    /// Holds `lease` (already admitted by the broker) for connection `id`.
    pub fn new(shared: Arc<Shared>, id: ConnId, lease: Lease) -> Admitted {
        Admitted {
            shared,
            id,
            lease,
            registered: false,
            released: false,
        }
    }

    /// Notes that the connection is in the hub, so release must take it out.
    pub fn mark_registered(&mut self) {
        self.registered = true;
    }

    /// Hands the hold to the connection's task, which then gives everything back itself
    /// ([`release`]) and carries no second copy of who the connection is. Returns whether
    /// the connection is in the hub.
    pub fn hand_over(mut self) -> bool {
        self.released = true;
        self.registered
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        release_later(
            self.shared.clone(),
            self.id,
            self.lease.clone(),
            self.registered,
        );
    }
}

/// [`release`] from a spawned task, for a hold dropped where nothing can wait (a drop
/// outside the runtime gives nothing back; the lease then expires in the registry).
pub fn release_later(shared: Arc<Shared>, id: ConnId, lease: Lease, registered: bool) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(release(shared, id, lease, registered));
    }
}

/// Gives everything back: hub entry (when `registered`), topics no longer needed here,
/// the limit slot.
pub async fn release(shared: Arc<Shared>, id: ConnId, lease: Lease, registered: bool) {
    // The rooms' presence entries go after the hub entry: a presence re-assertion that
    // reads the hub from then on leaves the connection out.
    let mut rooms = Vec::new();
    let mut member = None;
    if registered {
        // Nothing joins a room any more: the connection's task has ended.
        rooms = shared.hub.rooms_of(id);
        member = shared.hub.info_of(id);
        for topic in shared.hub.unregister(id) {
            if let Err(e) = shared.broker.unsubscribe(&topic).await {
                warn!(error = %e, ?topic, "could not unsubscribe");
            }
        }
    }
    let presence = rooms
        .iter()
        .map(|room| shared.broker.presence_leave(&lease.app, room, &lease.conn));
    let (left, released) = futures_util::future::join(
        futures_util::future::join_all(presence),
        shared.broker.release(&lease),
    )
    .await;
    for result in left {
        if let Err(e) = result {
            debug!(error = %e, conn = %lease.conn, "presence leave not recorded; retried");
        }
    }
    if let Some(member) = member {
        let events = rooms.iter().map(|room| {
            presence_events::announce(&shared, Change::Left, room, &member, &lease.conn)
        });
        futures_util::future::join_all(events).await;
    }
    if let Err(e) = released {
        // The lease expires on its own in the registry (docs/protocol.md §7).
        warn!(error = %e, conn = %lease.conn, "could not release connection slot");
    }
}
