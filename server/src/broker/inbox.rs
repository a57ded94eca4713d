//! One (app, user) inbox as the embedded broker keeps it, and the cursor rules of
//! docs/protocol.md §6 as plain code: seq strictly increasing, trimmed by age and length,
//! a cursor per device created at the user's watermark and moved only by that device's
//! acks, replay after the larger of the cursor and `since`.

use axum::extract::ws::Utf8Bytes;
use std::collections::VecDeque;

#[derive(Debug, Clone)]
struct Stored {
    seq: u64,
    at_ms: u64,
    frame: Utf8Bytes,
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    seq: u64,
    used_ms: u64,
}

/// Retention limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long messages (and unused cursors) are kept, ms.
    pub ttl_ms: u64,
    /// At most this many messages.
    pub max_len: usize,
}

/// A user's inbox.
#[derive(Debug, Default)]
pub struct Inbox {
    last_seq: u64,
    messages: VecDeque<Stored>,
    /// Per device (a user has a handful: a list is smaller and as fast as a map).
    cursors: Vec<(String, Cursor)>,
    watermark: u64,
}

impl Inbox {
    /// Appends a message; `encode(seq)` makes its frame once the seq is known.
    pub fn append(
        &mut self,
        now_ms: u64,
        retention: Retention,
        encode: impl FnOnce(u64) -> String,
    ) -> (u64, Utf8Bytes) {
        self.last_seq += 1;
        let seq = self.last_seq;
        let frame = Utf8Bytes::from(encode(seq));
        self.messages.push_back(Stored {
            seq,
            at_ms: now_ms,
            frame: frame.clone(),
        });
        self.trim(now_ms, retention);
        (seq, frame)
    }

    /// Drops messages past their age or beyond the length cap, and cursors unused for the TTL.
    pub fn trim(&mut self, now_ms: u64, retention: Retention) {
        while self.messages.len() > retention.max_len {
            self.messages.pop_front();
        }
        let oldest_kept = now_ms.saturating_sub(retention.ttl_ms);
        while self.messages.front().is_some_and(|m| m.at_ms < oldest_kept) {
            self.messages.pop_front();
        }
        self.cursors.retain(|(_, c)| c.used_ms >= oldest_kept);
    }

    /// Positions a connecting device and returns `(after, frames to replay)`.
    pub fn open(
        &mut self,
        device: Option<&str>,
        since: Option<u64>,
        now_ms: u64,
        retention: Retention,
    ) -> (u64, Vec<(u64, Utf8Bytes)>) {
        self.trim(now_ms, retention);
        let cursor = match device {
            Some(device) => {
                let watermark = self.watermark;
                let cursor = self.cursor_mut(device, watermark, now_ms);
                cursor.used_ms = now_ms;
                cursor.seq
            }
            // Without a device id there is nothing to remember between connections: start
            // at what the user has read on any device.
            None => self.watermark,
        };
        // A `since` above the newest seq comes from an inbox that no longer exists (the
        // broker lost it): it says nothing about this one, so it is ignored.
        let since = since.filter(|s| *s <= self.last_seq).unwrap_or(0);
        let after = cursor.max(since);
        (after, self.after(after))
    }

    /// A device's cursor, created at `start` when it has none.
    fn cursor_mut(&mut self, device: &str, start: u64, now_ms: u64) -> &mut Cursor {
        let index = match self.cursors.iter().position(|(d, _)| d == device) {
            Some(index) => index,
            None => {
                self.cursors.push((
                    device.to_owned(),
                    Cursor {
                        seq: start,
                        used_ms: now_ms,
                    },
                ));
                self.cursors.len() - 1
            }
        };
        &mut self.cursors[index].1
    }

    /// Messages after `after`, without touching any cursor.
    pub fn after(&self, after: u64) -> Vec<(u64, Utf8Bytes)> {
        self.messages
            .iter()
            .filter(|m| m.seq > after)
            .map(|m| (m.seq, m.frame.clone()))
            .collect()
    }

    /// Records a device's cumulative ack; `Err(newest)` when `seq` is beyond the newest message.
    pub fn ack(&mut self, device: Option<&str>, seq: u64, now_ms: u64) -> Result<(), u64> {
        if seq > self.last_seq {
            return Err(self.last_seq);
        }
        if let Some(device) = device {
            let cursor = self.cursor_mut(device, 0, now_ms);
            cursor.seq = cursor.seq.max(seq);
            cursor.used_ms = now_ms;
        }
        self.watermark = self.watermark.max(seq);
        Ok(())
    }

    /// Messages kept.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether no message is kept.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const KEEP: Retention = Retention {
        ttl_ms: 1_000,
        max_len: 3,
    };

    fn seqs(frames: &[(u64, Utf8Bytes)]) -> Vec<u64> {
        frames.iter().map(|(s, _)| *s).collect()
    }

    fn append(inbox: &mut Inbox, now: u64) -> u64 {
        inbox
            .append(now, KEEP, |seq| format!("{{\"seq\":{seq}}}"))
            .0
    }

    #[test]
    fn seq_increases_and_frames_carry_it() {
        let mut inbox = Inbox::default();
        let (seq, frame) = inbox.append(0, KEEP, |seq| format!("m{seq}"));
        assert_eq!((seq, frame.as_str()), (1, "m1"));
        assert_eq!(append(&mut inbox, 0), 2);
    }

    #[test]
    fn the_oldest_go_first_by_length_and_age() {
        let mut inbox = Inbox::default();
        for _ in 0..5 {
            append(&mut inbox, 0);
        }
        assert_eq!(seqs(&inbox.open(Some("d"), None, 0, KEEP).1), vec![3, 4, 5]);
        append(&mut inbox, 900);
        assert_eq!(
            seqs(&inbox.open(Some("e"), None, 1500, KEEP).1),
            vec![6],
            "age trims 3-5"
        );
    }

    #[test]
    fn a_new_device_starts_at_the_users_watermark() {
        let mut inbox = Inbox::default();
        for _ in 0..3 {
            append(&mut inbox, 0);
        }
        assert_eq!(
            seqs(&inbox.open(Some("phone"), None, 0, KEEP).1),
            vec![1, 2, 3]
        );
        inbox.ack(Some("phone"), 2, 0).unwrap();
        assert_eq!(
            seqs(&inbox.open(Some("tablet"), None, 0, KEEP).1),
            vec![3],
            "new device skips what was read"
        );
        assert_eq!(seqs(&inbox.open(Some("phone"), None, 0, KEEP).1), vec![3]);
    }

    #[test]
    fn each_device_moves_only_with_its_own_acks() {
        let mut inbox = Inbox::default();
        inbox.open(Some("a"), None, 0, KEEP);
        inbox.open(Some("b"), None, 0, KEEP);
        append(&mut inbox, 0);
        append(&mut inbox, 0);
        inbox.ack(Some("a"), 2, 0).unwrap();
        assert_eq!(
            seqs(&inbox.open(Some("b"), None, 0, KEEP).1),
            vec![1, 2],
            "b has acked nothing"
        );
        assert!(seqs(&inbox.open(Some("a"), None, 0, KEEP).1).is_empty());
    }

    #[test]
    fn since_skips_what_the_client_already_has() {
        let mut inbox = Inbox::default();
        for _ in 0..3 {
            append(&mut inbox, 0);
        }
        let (after, frames) = inbox.open(Some("d"), Some(2), 0, KEEP);
        assert_eq!((after, seqs(&frames)), (2, vec![3]));
    }

    #[test]
    fn a_since_from_a_lost_inbox_is_ignored() {
        let mut inbox = Inbox::default();
        append(&mut inbox, 0);
        let (after, frames) = inbox.open(Some("d"), Some(500), 0, KEEP);
        assert_eq!((after, seqs(&frames)), (0, vec![1]));
    }

    #[test]
    fn acks_beyond_the_newest_are_refused() {
        let mut inbox = Inbox::default();
        append(&mut inbox, 0);
        assert_eq!(inbox.ack(Some("d"), 2, 0), Err(1));
        assert_eq!(inbox.ack(Some("d"), 1, 0), Ok(()));
    }

    #[test]
    fn unused_cursors_expire() {
        let mut inbox = Inbox::default();
        append(&mut inbox, 0);
        inbox.ack(Some("old"), 1, 0).unwrap();
        append(&mut inbox, 2_000);
        inbox.ack(Some("other"), 2, 2_000).unwrap();
        // "old" was not used for longer than the TTL: it is recreated at the watermark (2).
        assert!(inbox.open(Some("old"), None, 2_500, KEEP).1.is_empty());
    }

    proptest! {
        /// Replays are in seq order, after the position, and a cursor never moves back.
        #[test]
        fn cursor_rules_hold(ops in proptest::collection::vec((0u8..4, 0u64..12, 0u8..2), 1..60)) {
            let keep = Retention { ttl_ms: u64::MAX / 2, max_len: 1000 };
            let mut inbox = Inbox::default();
            let mut acked: HashMap<String, u64> = HashMap::new();
            for (op, n, dev) in ops {
                let device = format!("d{dev}");
                match op {
                    0 | 1 => { inbox.append(0, keep, |s| s.to_string()); }
                    2 => {
                        let result = inbox.ack(Some(&device), n, 0);
                        prop_assert_eq!(result.is_ok(), n <= inbox.last_seq);
                        if result.is_ok() {
                            let a = acked.entry(device).or_default();
                            *a = (*a).max(n);
                        }
                    }
                    _ => {
                        let (after, frames) = inbox.open(Some(&device), Some(n), 0, keep);
                        let got = seqs(&frames);
                        prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
                        prop_assert!(got.iter().all(|s| *s > after));
                        if n <= inbox.last_seq {
                            prop_assert!(after >= n);
                        }
                        if let Some(a) = acked.get(&device) {
                            prop_assert!(after >= *a, "cursor moved back");
                        }
                        let expected: Vec<u64> = (after + 1..=inbox.last_seq).collect();
                        prop_assert_eq!(got, expected);
                    }
                }
            }
        }
    }
}
