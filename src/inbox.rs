//! The inbox cursor rules (docs/protocol.md §6): user messages carry a `seq`; each reaches the
//! app once, duplicates (`seq` at or below what was already handed over) are dropped, and
//! the cursor moves, durably, only after the app's listener returned for that message, so
//! a kill between delivery and processing replays the message instead of losing it.
//!
//! A gateway never sends a seq at or below the `since` of the connection (it replays after
//! the larger of its cursor and `since`, and new messages get higher seqs). Such a seq
//! means the gateway lost the inbox and started counting again (an embedded broker that
//! restarted): the cursor follows it down instead of dropping every new message.

/// What to do with an incoming published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the app.
    Deliver,
    /// Already handed over (or processed): drop it.
    Duplicate,
    /// The gateway's inbox restarted below our cursor: the cursor was moved down to just
    /// before this message (store it), and the message is to be delivered.
    Restarted {
        /// The new cursor.
        cursor: u64,
    },
}

/// The cursor state of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbox {
    /// Highest seq the app has processed; durable; sent as `since` and acked.
    processed: u64,
    /// Highest seq handed to the app (may be ahead of `processed` while the listener runs).
    dispatched: u64,
    /// The `since` of the current connection; nothing at or below it can legitimately come.
    floor: u64,
}

impl Inbox {
    /// An inbox resuming from the stored cursor.
    pub fn new(processed: u64) -> Self {
        Inbox {
            processed,
            dispatched: processed,
            floor: 0,
        }
    }

    /// A connection is being opened: its `since`.
    pub fn on_connect(&mut self) -> u64 {
        self.floor = self.processed;
        self.processed
    }

    /// The durable cursor: the `since` of the next connection.
    pub fn since(&self) -> u64 {
        self.processed
    }

    /// A published message arrived; room and app messages have no seq and always pass.
    pub fn on_message(&mut self, seq: Option<u64>) -> Verdict {
        match seq {
            None => Verdict::Deliver,
            Some(seq) if seq <= self.floor => {
                let cursor = seq.saturating_sub(1);
                self.floor = 0;
                self.processed = cursor;
                self.dispatched = seq;
                Verdict::Restarted { cursor }
            }
            Some(seq) if seq <= self.dispatched => Verdict::Duplicate,
            Some(seq) => {
                self.dispatched = seq;
                Verdict::Deliver
            }
        }
    }

    /// The app's listener returned for message `seq`. Returns the new cursor to store and
    /// ack, or `None` when it does not move (an older seq, or a repeat).
    pub fn on_processed(&mut self, seq: u64) -> Option<u64> {
        if seq <= self.processed {
            return None;
        }
        self.processed = seq;
        Some(seq)
    }

    /// The client restarted without delivering what was dispatched: start from the
    /// durable cursor again.
    pub fn forget_undelivered(&mut self) {
        self.dispatched = self.processed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_messages_always_pass() {
        let mut inbox = Inbox::new(10);
        assert_eq!(inbox.on_message(None), Verdict::Deliver);
        assert_eq!(inbox.on_message(None), Verdict::Deliver);
    }

    #[test]
    fn cursor_moves_only_after_processing() {
        let mut inbox = Inbox::new(0);
        assert_eq!(inbox.on_message(Some(1)), Verdict::Deliver);
        assert_eq!(inbox.since(), 0);
        assert_eq!(inbox.on_processed(1), Some(1));
        assert_eq!(inbox.since(), 1);
    }
}
