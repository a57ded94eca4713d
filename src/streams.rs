//! Stream positions on the client (docs/protocol.md §6, streams): rooms with history and
//! the app's broadcast stream number their messages with an `offset` within an `epoch`.
//! Per stream the client keeps two positions:
//!
//! - `processed`: the last message the app's listener returned for; durable (written with
//!   the inbox cursor, in the same flush) and sent as `since` when it joins again, so a
//!   reconnect, or a restart after the app was killed, asks for exactly what is missing;
//! - `dispatched`: the last message handed to the listener, ahead of `processed` while
//!   the listener runs. A replay of what was dispatched already is dropped here, so each
//!   message reaches the app once, in offset order.
//!
//! A stream whose history cannot give what the app missed is *reset*: the gateway
//! answers a join with `recovered: false` for a position it no longer holds, or a
//! message skips offsets or comes in another epoch. The app is told (it must refetch
//! its state), and the position starts again where the stream stands.
//!
//! Everything here is pure: the engine feeds it frames and listener results and
//! persists what [`Streams::take_writes`] returns.

use std::collections::BTreeMap;
use tether_protocol::stream::{StreamJoin, StreamPosition};

/// Which stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKey {
    /// The app's broadcast stream.
    App,
    /// A room with history.
    Room(String),
}

impl StreamKey {
    /// The stream of a published message: its room, else the app's.
    pub fn of(room: Option<&str>) -> Self {
        match room {
            Some(room) => StreamKey::Room(room.to_owned()),
            None => StreamKey::App,
        }
    }

    /// The room, `None` for the app stream (as storage and `on_stream_reset` name it).
    pub fn room(&self) -> Option<&str> {
        match self {
            StreamKey::App => None,
            StreamKey::Room(room) => Some(room),
        }
    }
}

/// What to do with a stream message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Next in order (or of a stream not tracked): hand it to the app.
    Deliver,
    /// At or below what was handed over already in this epoch: drop it.
    Duplicate,
    /// Hand it to the app, and tell the app the stream was reset first: messages before
    /// this one were missed for good (a gap in the offsets, or another epoch).
    Reset,
}

/// What a join answer (`room_joined`, `appStream`) means for the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// Every message after the position follows (possibly none).
    Recovered,
    /// No position was held: the stream starts now, nothing to recover.
    Started,
    /// The position held is lost (another epoch, or older than the history): nothing is
    /// replayed and the app must refetch.
    Reset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stream {
    processed: StreamPosition,
    dispatched: StreamPosition,
}

impl Stream {
    fn at(position: StreamPosition) -> Self {
        Stream {
            processed: position.clone(),
            dispatched: position,
        }
    }
}

/// Every stream the client tracks.
#[derive(Debug, Default)]
pub struct Streams {
    streams: BTreeMap<StreamKey, Stream>,
    /// Positions to persist (`None`: forget), latest per stream.
    writes: BTreeMap<StreamKey, Option<StreamPosition>>,
}

impl Streams {
    /// Streams resuming from the stored positions (room, or `None` for the app stream).
    pub fn new(stored: impl IntoIterator<Item = (Option<String>, StreamPosition)>) -> Self {
        let streams = stored
            .into_iter()
            .map(|(room, position)| {
                let key = room.map_or(StreamKey::App, StreamKey::Room);
                (key, Stream::at(position))
            })
            .collect();
        Streams {
            streams,
            writes: BTreeMap::new(),
        }
    }

    /// The position to recover from (`since`): the last one the app processed.
    pub fn since(&self, key: &StreamKey) -> Option<&StreamPosition> {
        self.streams.get(key).map(|s| &s.processed)
    }

    /// The gateway answered a join that asked to recover from `asked` (`None`: a fresh
    /// join). `join` `None`: the stream keeps no history (any more), and the position
    /// held for it is forgotten.
    pub fn on_joined(
        &mut self,
        key: &StreamKey,
        join: Option<&StreamJoin>,
        asked: Option<&StreamPosition>,
    ) -> Joined {
        let Some(join) = join else {
            self.forget(key);
            return Joined::Started;
        };
        let held = self.streams.contains_key(key);
        if held && join.recovered && asked.is_some_and(|a| a.epoch == join.epoch) {
            // The replay follows; what was dispatched already is dropped as it comes.
            return Joined::Recovered;
        }
        // A join that asked for nothing recovers nothing: the stream starts where it
        // stands (a join after a leave, or the first one), and that is no loss.
        let verdict = if asked.is_some() {
            Joined::Reset
        } else {
            Joined::Started
        };
        let position = StreamPosition {
            offset: join.offset,
            epoch: join.epoch.clone(),
        };
        self.writes.insert(key.clone(), Some(position.clone()));
        self.streams.insert(key.clone(), Stream::at(position));
        verdict
    }

    /// A message of a stream arrived.
    pub fn on_message(&mut self, key: &StreamKey, offset: u64, epoch: &str) -> Verdict {
        let Some(stream) = self.streams.get_mut(key) else {
            // Not joined with history (a message racing a leave): nothing to order by.
            return Verdict::Deliver;
        };
        let position = StreamPosition {
            offset,
            epoch: epoch.to_owned(),
        };
        if stream.dispatched.epoch != epoch {
            // The stream started over: what the app processed belongs to a history that
            // is gone, so the position restarts just before this message (persisted now,
            // or a restart would ask the gateway for the old epoch and be reset again).
            let rebased = StreamPosition {
                offset: offset.saturating_sub(1),
                epoch: epoch.to_owned(),
            };
            self.writes.insert(key.clone(), Some(rebased.clone()));
            stream.processed = rebased;
            stream.dispatched = position;
            return Verdict::Reset;
        }
        let last = stream.dispatched.offset;
        if offset <= last {
            return Verdict::Duplicate;
        }
        stream.dispatched = position;
        if offset == last + 1 {
            Verdict::Deliver
        } else {
            Verdict::Reset
        }
    }

    /// The listener returned for a message at `position` of stream `key`.
    pub fn on_processed(&mut self, key: &StreamKey, position: StreamPosition) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        // A message of an epoch the stream has left since (a reset while the listener ran)
        // says nothing about the current one.
        let current = stream.dispatched.epoch == position.epoch;
        let ahead =
            stream.processed.epoch != position.epoch || position.offset > stream.processed.offset;
        if current && ahead {
            stream.processed = position.clone();
            self.writes.insert(key.clone(), Some(position));
        }
    }

    /// The app left the stream (or was refused it for good): its position goes.
    pub fn forget(&mut self, key: &StreamKey) {
        if self.streams.remove(key).is_some() {
            self.writes.insert(key.clone(), None);
        }
    }

    /// Writes that failed, to try again with the next (a newer one for the stream wins).
    pub fn keep_writes(&mut self, writes: Vec<(StreamKey, Option<StreamPosition>)>) {
        for (key, position) in writes {
            self.writes.entry(key).or_insert(position);
        }
    }

    /// Positions changed since the last call, to persist.
    pub fn take_writes(&mut self) -> Vec<(StreamKey, Option<StreamPosition>)> {
        std::mem::take(&mut self.writes).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> StreamKey {
        StreamKey::Room("news".into())
    }

    fn pos(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: epoch.into(),
        }
    }

    fn join(offset: u64, epoch: &str, recovered: bool) -> StreamJoin {
        StreamJoin {
            offset,
            epoch: epoch.into(),
            recovered,
            replay_count: 0,
        }
    }

    #[test]
    fn a_first_join_starts_at_the_newest_offset_and_persists_it() {
        let mut streams = Streams::default();
        assert_eq!(streams.since(&room()), None);
        assert_eq!(
            streams.on_joined(&room(), Some(&join(7, "e1", false)), None),
            Joined::Started
        );
        assert_eq!(streams.since(&room()), Some(&pos(7, "e1")));
        assert_eq!(streams.take_writes(), vec![(room(), Some(pos(7, "e1")))]);
        assert_eq!(streams.on_message(&room(), 8, "e1"), Verdict::Deliver);
        assert_eq!(streams.on_message(&room(), 8, "e1"), Verdict::Duplicate);
        assert_eq!(streams.on_message(&room(), 10, "e1"), Verdict::Reset, "gap");
    }

    #[test]
    fn a_replay_after_a_recovered_join_drops_what_was_dispatched_already() {
        let mut streams = Streams::new([(Some("news".into()), pos(3, "e1"))]);
        for offset in 4..=6 {
            assert_eq!(streams.on_message(&room(), offset, "e1"), Verdict::Deliver);
        }
        streams.on_processed(&room(), pos(4, "e1"));
        assert_eq!(streams.since(&room()), Some(&pos(4, "e1")));
        // Reconnect with since 4 while 5 and 6 are still with the listener.
        assert_eq!(
            streams.on_joined(&room(), Some(&join(7, "e1", true)), Some(&pos(4, "e1"))),
            Joined::Recovered
        );
        assert_eq!(streams.on_message(&room(), 5, "e1"), Verdict::Duplicate);
        assert_eq!(streams.on_message(&room(), 6, "e1"), Verdict::Duplicate);
        assert_eq!(streams.on_message(&room(), 7, "e1"), Verdict::Deliver);
    }

    #[test]
    fn a_lost_position_resets_and_restarts_where_the_stream_stands() {
        let mut streams = Streams::new([(Some("news".into()), pos(3, "e1"))]);
        assert_eq!(
            streams.on_joined(&room(), Some(&join(40, "e2", false)), Some(&pos(3, "e1"))),
            Joined::Reset
        );
        assert_eq!(streams.since(&room()), Some(&pos(40, "e2")));
        assert_eq!(streams.on_message(&room(), 41, "e2"), Verdict::Deliver);
        // A late listener result of the old epoch does not move the position back.
        streams.on_processed(&room(), pos(3, "e1"));
        assert_eq!(streams.since(&room()), Some(&pos(40, "e2")));
    }

    #[test]
    fn a_recovered_answer_of_another_epoch_is_a_reset() {
        let mut streams = Streams::new([(Some("news".into()), pos(3, "e1"))]);
        assert_eq!(
            streams.on_joined(&room(), Some(&join(9, "e2", true)), Some(&pos(3, "e1"))),
            Joined::Reset
        );
        // A fresh join (after a leave, a join answered late) resets nothing.
        assert_eq!(
            streams.on_joined(&room(), Some(&join(12, "e2", false)), None),
            Joined::Started
        );
        assert_eq!(streams.since(&room()), Some(&pos(12, "e2")));
    }

    #[test]
    fn a_message_of_another_epoch_resets_and_rebases_the_durable_position() {
        let mut streams = Streams::new([(None, pos(3, "e1"))]);
        assert_eq!(streams.on_message(&StreamKey::App, 1, "e2"), Verdict::Reset);
        assert_eq!(
            streams.take_writes(),
            vec![(StreamKey::App, Some(pos(0, "e2")))]
        );
        streams.on_processed(&StreamKey::App, pos(1, "e2"));
        assert_eq!(streams.since(&StreamKey::App), Some(&pos(1, "e2")));
    }

    #[test]
    fn leaving_or_losing_history_forgets_the_position() {
        let mut streams = Streams::new([(Some("news".into()), pos(3, "e1"))]);
        assert_eq!(streams.on_joined(&room(), None, None), Joined::Started);
        assert_eq!(streams.since(&room()), None);
        assert_eq!(streams.take_writes(), vec![(room(), None)]);
        streams.forget(&room());
        assert!(streams.take_writes().is_empty(), "nothing held any more");
        // Messages of an untracked stream pass and leave nothing behind.
        assert_eq!(streams.on_message(&room(), 5, "e1"), Verdict::Deliver);
        streams.on_processed(&room(), pos(5, "e1"));
        assert!(streams.take_writes().is_empty());
    }
}
