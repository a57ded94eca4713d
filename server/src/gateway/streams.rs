//! A connection's places in the streams it reads (rooms with history, the app's
//! broadcasts): what keeps each stream's messages once and in offset order on the socket.
//!
//! A connection joins a stream by reading its history after subscribing, so a message
//! published meanwhile may come twice (in the read and live); [`Positions::check`] drops
//! the second. A live message that skips offsets means this node missed some (its Redis
//! subscription was down): the connection fills the gap from the history before it goes
//! on ([`Check::Gap`]); what the history no longer holds stays a gap, which tells the
//! client it lost messages for good.

use crate::broker::stream::{HistoryLimits, ReadFrom, StreamName, StreamRead};
use crate::broker::{Broker, BrokerError};
use crate::hub::StreamMark;
use axum::extract::ws::Utf8Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use tether_protocol::stream::{StreamJoin, StreamPosition};

/// One stream's place.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    epoch: Arc<str>,
    /// The last offset sent (or skipped as known to the client).
    offset: u64,
    /// Gaps below this offset were filled from the history already.
    checked: u64,
}

/// What to do with a queued stream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Send it (the place moved to it).
    Send,
    /// Sent already (by a join's replay or a gap fill): drop it.
    Duplicate,
    /// Offsets before it are missing: fill from the history after `after` first.
    Gap {
        /// The last offset sent.
        after: u64,
        /// Its epoch.
        epoch: Arc<str>,
    },
}

/// The places of one connection, by room (`None`: the app's stream).
#[derive(Debug, Default)]
pub struct Positions {
    places: HashMap<Option<Arc<str>>, Place>,
}

impl Positions {
    /// The connection holds `offset` of `epoch` in the stream of `room` (after a join or
    /// a fill). Within one epoch the place never moves back.
    pub fn set(&mut self, room: Option<&str>, epoch: &str, offset: u64) {
        let key = room.map(Arc::from);
        match self.places.get_mut(&key) {
            Some(place) if *place.epoch == *epoch => {
                place.offset = place.offset.max(offset);
                place.checked = place.checked.max(offset);
            }
            _ => {
                self.places.insert(
                    key,
                    Place {
                        epoch: Arc::from(epoch),
                        offset,
                        checked: offset,
                    },
                );
            }
        }
    }

    /// The connection left the room.
    pub fn forget(&mut self, room: &str) {
        self.places.remove(&Some(Arc::from(room)));
    }

    /// Whether the connection reads no stream.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// The streams and places held, for a resync.
    pub fn held(&self) -> Vec<(Option<Arc<str>>, Arc<str>, u64)> {
        self.places
            .iter()
            .map(|(room, place)| (room.clone(), place.epoch.clone(), place.offset))
            .collect()
    }

    /// What to do with the queued stream message `mark`.
    pub fn check(&mut self, mark: &StreamMark) -> Check {
        let Some(place) = self.places.get_mut(&mark.room) else {
            // Not joined through a stream answer (it left the room after the message was
            // queued): nothing to compare with.
            return Check::Send;
        };
        if place.epoch != mark.epoch {
            // The stream started again (its store lost it): the client sees the new epoch.
            *place = Place {
                epoch: mark.epoch.clone(),
                offset: mark.offset,
                checked: mark.offset,
            };
            return Check::Send;
        }
        if mark.offset <= place.offset {
            return Check::Duplicate;
        }
        if mark.offset > place.offset + 1 && mark.offset > place.checked {
            return Check::Gap {
                after: place.offset,
                epoch: place.epoch.clone(),
            };
        }
        place.offset = mark.offset;
        Check::Send
    }

    /// The gap before `upto` in the stream of `room` was filled as far as the history
    /// allowed; the message at `upto` goes out next either way.
    pub fn gap_checked(&mut self, room: Option<&str>, upto: u64) {
        if let Some(place) = self.places.get_mut(&room.map(Arc::from)) {
            place.checked = place.checked.max(upto);
        }
    }
}

/// A join of a stream: the answer's stream part and the messages to send after it.
pub struct Joined {
    /// For `room_joined` / `connection_established.appStream`.
    pub answer: StreamJoin,
    /// Offset and frame of each replayed message, in order.
    pub frames: Vec<(u64, Utf8Bytes)>,
}

/// Reads what a connection joining the stream `name` from `since` must get: everything
/// after its position when the stream still has it, else nothing (the client refetches).
/// Call after the connection receives the stream live, so nothing falls between.
pub async fn join(
    broker: &dyn Broker,
    app: &str,
    name: &StreamName,
    since: Option<&StreamPosition>,
    limits: HistoryLimits,
) -> Result<Joined, BrokerError> {
    let from = match since {
        Some(position) => ReadFrom::After {
            offset: position.offset,
            epoch: Some(&position.epoch),
        },
        None => ReadFrom::Now,
    };
    let read = broker
        .read_stream(app, name, from, limits, limit_of(limits))
        .await?;
    Ok(joined(read, since))
}

fn limit_of(limits: HistoryLimits) -> usize {
    usize::try_from(limits.size).unwrap_or(usize::MAX)
}

fn joined(read: StreamRead, since: Option<&StreamPosition>) -> Joined {
    let StreamRead {
        epoch,
        top,
        recovered,
        frames,
        ..
    } = read;
    let (offset, frames) = match since {
        Some(position) if recovered => (
            frames
                .last()
                .map_or(position.offset, |(o, _)| *o)
                .max(position.offset),
            frames,
        ),
        _ => (top, Vec::new()),
    };
    Joined {
        answer: StreamJoin {
            offset,
            epoch,
            recovered,
            replay_count: frames.len() as u32,
        },
        frames,
    }
}

/// Reads what follows `after` of `epoch` in the stream, to fill a gap or after a resync:
/// the frames when the history still reaches back (else none: what is gone stays a gap).
pub async fn fill(
    broker: &dyn Broker,
    app: &str,
    name: &StreamName,
    after: u64,
    epoch: &str,
    limits: HistoryLimits,
) -> Result<Vec<(u64, Utf8Bytes)>, BrokerError> {
    let read = broker
        .read_stream(
            app,
            name,
            ReadFrom::After {
                offset: after,
                epoch: Some(epoch),
            },
            limits,
            limit_of(limits),
        )
        .await?;
    Ok(if read.recovered {
        read.frames
    } else {
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(room: Option<&str>, offset: u64, epoch: &str) -> StreamMark {
        StreamMark {
            room: room.map(Arc::from),
            offset,
            epoch: Arc::from(epoch),
        }
    }

    #[test]
    fn the_seam_drops_what_the_replay_sent_and_passes_what_follows() {
        let mut positions = Positions::default();
        positions.set(Some("r"), "e", 5);
        assert_eq!(positions.check(&mark(Some("r"), 4, "e")), Check::Duplicate);
        assert_eq!(positions.check(&mark(Some("r"), 5, "e")), Check::Duplicate);
        assert_eq!(positions.check(&mark(Some("r"), 6, "e")), Check::Send);
        assert_eq!(positions.check(&mark(Some("r"), 6, "e")), Check::Duplicate);
        // Other streams are apart.
        assert_eq!(positions.check(&mark(None, 1, "a")), Check::Send);
    }

    #[test]
    fn a_gap_is_filled_once_then_the_message_goes_on() {
        let mut positions = Positions::default();
        positions.set(Some("r"), "e", 5);
        let gap = positions.check(&mark(Some("r"), 9, "e"));
        assert_eq!(
            gap,
            Check::Gap {
                after: 5,
                epoch: Arc::from("e")
            }
        );
        // The fill sent 6 and 7; 8 is gone from the history.
        positions.set(Some("r"), "e", 7);
        positions.gap_checked(Some("r"), 9);
        assert_eq!(positions.check(&mark(Some("r"), 9, "e")), Check::Send);
        assert_eq!(positions.check(&mark(Some("r"), 10, "e")), Check::Send);
    }

    #[test]
    fn a_new_epoch_is_passed_on_and_becomes_the_place() {
        let mut positions = Positions::default();
        positions.set(Some("r"), "e", 50);
        assert_eq!(positions.check(&mark(Some("r"), 1, "f")), Check::Send);
        assert_eq!(positions.check(&mark(Some("r"), 2, "f")), Check::Send);
        assert_eq!(positions.check(&mark(Some("r"), 1, "f")), Check::Duplicate);
    }

    #[test]
    fn a_join_answer_holds_the_last_replayed_offset_or_the_newest() {
        let read = |recovered, frames: Vec<u64>| StreamRead {
            epoch: "e".into(),
            top: 9,
            recovered,
            frames: frames
                .into_iter()
                .map(|o| (o, Utf8Bytes::from(o.to_string())))
                .collect(),
            more: false,
        };
        let since = StreamPosition {
            offset: 6,
            epoch: "e".into(),
        };
        let got = joined(read(true, vec![7, 8, 9]), Some(&since));
        assert_eq!(
            got.answer,
            StreamJoin {
                offset: 9,
                epoch: "e".into(),
                recovered: true,
                replay_count: 3
            }
        );
        let lost = joined(read(false, vec![8, 9]), Some(&since));
        assert_eq!((lost.answer.offset, lost.answer.recovered), (9, false));
        assert!(lost.frames.is_empty());
        let fresh = joined(read(false, vec![]), None);
        assert_eq!((fresh.answer.offset, fresh.answer.replay_count), (9, 0));
    }
}
