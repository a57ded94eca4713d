//! Streams: rooms with history and app broadcast streams (docs/protocol.md §6). Every
//! message published to a stream gets the next `offset` and carries the stream's
//! `epoch`; the stream keeps its last messages (by count and age) so a client that lost
//! its connection can ask for what followed its position.
//!
//! This module holds what both brokers share: the names, the limits, the answers, and the
//! recovery rule ([`recovers`]). [`History`] is the embedded broker's stream; the Redis one
//! is a list and a hash written by Lua scripts (`redis::scripts::STREAM_PUBLISH`) that
//! follow the same rule.

use axum::extract::ws::Utf8Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use tether_protocol::stream::frame_with_position;

/// Which stream of an app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamName {
    /// A room with history.
    Room(Arc<str>),
    /// The app's broadcasts (`/v1/send/app`).
    App,
}

impl StreamName {
    /// The room, for a room stream.
    pub fn room(&self) -> Option<&str> {
        match self {
            StreamName::Room(room) => Some(room),
            StreamName::App => None,
        }
    }
}

/// What a stream keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept at most (the oldest go first).
    pub size: u64,
    /// How long a message is kept, ms.
    pub ttl_ms: u64,
}

/// Which streams keep a history, and how much: the gateways' `WS_ROOM_HISTORY*` and
/// `WS_APP_HISTORY*` (a `Publisher` must be given the same).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSettings {
    /// Room patterns (`orders:*`, `lobby`, `*`) whose rooms keep history.
    pub rooms: Vec<String>,
    /// What each of those rooms keeps.
    pub room: Option<HistoryLimits>,
    /// What each app's broadcast stream keeps (`None`: broadcasts are live only).
    pub app: Option<HistoryLimits>,
}

impl StreamSettings {
    /// What the stream `name` keeps, or `None` when it is live only.
    pub fn limits_of(&self, name: &StreamName) -> Option<HistoryLimits> {
        limits_for(&self.rooms, self.room, self.app, name)
    }
}

/// What the stream `name` keeps under these settings (see [`StreamSettings`]), without
/// building them.
pub fn limits_for(
    rooms: &[String],
    room: Option<HistoryLimits>,
    app: Option<HistoryLimits>,
    name: &StreamName,
) -> Option<HistoryLimits> {
    match name {
        StreamName::Room(name) => {
            room.filter(|_| tether_protocol::names::room_allowed(rooms, name))
        }
        StreamName::App => app,
    }
}

/// How long a stream's epoch and offset counter outlive its last publish, ms: far longer
/// than its messages, so a quiet stream keeps its numbering (a client whose position is
/// the newest offset recovers with nothing to replay) instead of starting a new epoch.
pub const META_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// A published stream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppended {
    /// Its offset.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: String,
    /// Connections reached, when known (the embedded broker counts them).
    pub delivered: Option<u64>,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom<'a> {
    /// At the newest message: nothing is read, the answer gives the position.
    Now,
    /// After `offset` of `epoch` (`None`: whatever the stream's epoch is).
    After {
        /// The last offset the reader has.
        offset: u64,
        /// The epoch it belongs to.
        epoch: Option<&'a str>,
    },
}

/// A read of a stream.
#[derive(Debug, Clone, Default)]
pub struct StreamRead {
    /// The stream's epoch.
    pub epoch: String,
    /// Its newest offset (0: nothing published in this epoch).
    pub top: u64,
    /// Whether `frames` starts right after the position read from (always false for
    /// [`ReadFrom::Now`]).
    pub recovered: bool,
    /// Messages (offset, frame), oldest first: after the position when recovered, else
    /// the oldest kept (empty for [`ReadFrom::Now`]).
    pub frames: Vec<(u64, Utf8Bytes)>,
    /// Whether more messages follow the last of `frames`.
    pub more: bool,
}

/// Whether a reader at `after` (of `epoch`) can get every message it lacks from a stream
/// whose epoch is `current`, whose newest offset is `top` and whose oldest kept message
/// is `oldest` (`None`: nothing kept).
pub fn recovers(
    after: u64,
    epoch: Option<&str>,
    current: &str,
    top: u64,
    oldest: Option<u64>,
) -> bool {
    if epoch.is_some_and(|e| e != current) || after > top {
        return false;
    }
    after == top || oldest.is_some_and(|oldest| oldest <= after + 1)
}

/// A fresh random epoch: 8 hex digits.
pub fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The embedded broker's stream: its epoch, its counter and its last messages.
#[derive(Debug)]
pub struct History {
    epoch: Arc<str>,
    top: u64,
    /// (offset, ms appended, frame), oldest first.
    kept: VecDeque<(u64, u64, Utf8Bytes)>,
    /// When the last message was published (ms), for dropping idle streams.
    last_ms: u64,
}

impl History {
    /// A new stream (a new epoch, nothing published).
    pub fn new(now_ms: u64) -> History {
        History {
            epoch: Arc::from(new_epoch()),
            top: 0,
            kept: VecDeque::new(),
            last_ms: now_ms,
        }
    }

    /// The epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// Whether the stream went unused for [`META_TTL_MS`] (it may be dropped: a new one
    /// starts a new epoch, as a Redis stream whose meta expired does).
    pub fn idle(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_ms) > META_TTL_MS
    }

    /// Appends a message (`body`: the envelope without offset and epoch); returns its
    /// offset and frame.
    pub fn append(&mut self, now_ms: u64, limits: HistoryLimits, body: &str) -> (u64, Utf8Bytes) {
        self.top += 1;
        self.last_ms = now_ms;
        let frame = Utf8Bytes::from(frame_with_position(self.top, &self.epoch, body));
        self.kept.push_back((self.top, now_ms, frame.clone()));
        while self.kept.len() as u64 > limits.size {
            self.kept.pop_front();
        }
        self.trim(now_ms, limits);
        (self.top, frame)
    }

    fn trim(&mut self, now_ms: u64, limits: HistoryLimits) {
        let cutoff = now_ms.saturating_sub(limits.ttl_ms);
        while self.kept.front().is_some_and(|(_, at, _)| *at < cutoff) {
            self.kept.pop_front();
        }
    }

    /// Reads from `from`, at most `limit` messages.
    pub fn read(
        &mut self,
        from: ReadFrom<'_>,
        now_ms: u64,
        limits: HistoryLimits,
        limit: usize,
    ) -> StreamRead {
        self.trim(now_ms, limits);
        let mut read = StreamRead {
            epoch: self.epoch.to_string(),
            top: self.top,
            ..StreamRead::default()
        };
        let ReadFrom::After { offset, epoch } = from else {
            return read;
        };
        let oldest = self.kept.front().map(|(o, _, _)| *o);
        read.recovered = recovers(offset, epoch, &self.epoch, self.top, oldest);
        let start = if read.recovered { offset } else { 0 };
        let mut after = self.kept.iter().filter(|(o, _, _)| *o > start);
        read.frames = after
            .by_ref()
            .take(limit)
            .map(|(o, _, f)| (*o, f.clone()))
            .collect();
        read.more = after.next().is_some();
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HistoryLimits = HistoryLimits {
        size: 3,
        ttl_ms: 1000,
    };

    fn offsets(read: &StreamRead) -> Vec<u64> {
        read.frames.iter().map(|(o, _)| *o).collect()
    }

    #[test]
    fn offsets_rise_by_one_and_frames_carry_them() {
        let mut history = History::new(0);
        let (first, frame) = history.append(0, LIMITS, r#"{"type":"t","room":"r"}"#);
        assert_eq!(first, 1);
        let epoch = history.epoch().to_string();
        assert_eq!(
            frame.as_str(),
            format!(r#"{{"offset":1,"epoch":"{epoch}","type":"t","room":"r"}}"#)
        );
        assert_eq!(history.append(0, LIMITS, "{}").0, 2);
    }

    #[test]
    fn a_reader_recovers_only_while_the_history_reaches_back_to_it() {
        let mut history = History::new(0);
        for _ in 0..5 {
            history.append(10, LIMITS, "{}");
        }
        let epoch = history.epoch().to_string();
        let from = |offset| ReadFrom::After {
            offset,
            epoch: Some(&epoch),
        };
        // Kept: 3, 4, 5.
        let read = history.read(from(2), 10, LIMITS, 100);
        assert!(read.recovered);
        assert_eq!(offsets(&read), [3, 4, 5]);
        let read = history.read(from(4), 10, LIMITS, 100);
        assert_eq!((read.recovered, offsets(&read)), (true, vec![5]));
        let read = history.read(from(5), 10, LIMITS, 100);
        assert_eq!((read.recovered, offsets(&read)), (true, vec![]));
        // 2 left the history: not recovered, the oldest kept are handed out.
        let read = history.read(from(1), 10, LIMITS, 2);
        assert!(!read.recovered);
        assert_eq!(offsets(&read), [3, 4]);
        assert!(read.more);
        // Another epoch, or a position beyond the newest, recovers nothing.
        let other = history.read(
            ReadFrom::After {
                offset: 4,
                epoch: Some("other"),
            },
            10,
            LIMITS,
            100,
        );
        assert!(!other.recovered);
        assert!(!history.read(from(6), 10, LIMITS, 100).recovered);
        let now = history.read(ReadFrom::Now, 10, LIMITS, 100);
        assert_eq!((now.top, now.recovered, now.frames.len()), (5, false, 0));
    }

    #[test]
    fn messages_older_than_the_ttl_are_gone_but_the_newest_position_still_recovers() {
        let mut history = History::new(0);
        history.append(0, LIMITS, "{}");
        history.append(0, LIMITS, "{}");
        let epoch = history.epoch().to_string();
        let at = |offset| ReadFrom::After {
            offset,
            epoch: Some(&epoch),
        };
        assert!(!history.read(at(1), 5_000, LIMITS, 100).recovered);
        let newest = history.read(at(2), 5_000, LIMITS, 100);
        assert!(newest.recovered && newest.frames.is_empty());
    }

    #[test]
    fn the_recovery_rule() {
        assert!(recovers(0, None, "e", 0, None));
        assert!(recovers(3, Some("e"), "e", 3, None));
        assert!(recovers(3, Some("e"), "e", 9, Some(4)));
        assert!(!recovers(3, Some("e"), "e", 9, Some(5)));
        assert!(!recovers(3, Some("x"), "e", 9, Some(1)));
        assert!(!recovers(10, Some("e"), "e", 9, Some(1)));
        assert!(!recovers(3, Some("e"), "e", 9, None));
    }
}
