//! Properties that were missing next to the existing ones (state machine:
//! `sdk_state_machine.rs`; backoff: `sdk_backoff.rs`; the gateway's inbox cursors:
//! `server/src/broker/inbox.rs`): the SDK's inbox cursor rules (`src/inbox.rs`) against a
//! model, over random interleavings of connects, messages (fresh, repeated, from an inbox
//! that restarted), processing and restarts; and the Redis key escaping as a property
//! (reversible, so two ids never share a key, and free of key and pattern syntax); and the
//! SDK's stream rules (`src/streams.rs`) against a gateway model that publishes, cuts,
//! replays after `since` and outlives client restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

use proptest::prelude::*;
use std::collections::BTreeMap;
use tether::inbox::{Inbox, Verdict};
use tether::protocol::stream::{StreamJoin, StreamPosition};
use tether::streams::{Joined, StreamKey, Streams, Verdict as StreamVerdict};
use tether_server::broker::redis::keys;

#[derive(Debug, Clone)]
enum Op {
    /// A new connection (the gateway sends nothing at or below its since).
    Connect,
    /// The gateway sends this seq (relative: below, at or above what was handed over).
    Message(i64),
    /// A room or app message (no seq).
    Live,
    /// The app's listener returned for the oldest message handed over and not processed.
    Process,
    /// The process restarts: a new inbox from the durable cursor.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Connect),
        6 => (-3i64..4).prop_map(Op::Message),
        1 => Just(Op::Live),
        4 => Just(Op::Process),
        1 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone)]
enum StreamOp {
    /// The backend publishes one message; a joined connection gets it live.
    Publish,
    /// The app's listener returns for the oldest message handed to it.
    Process,
    /// The socket dies (messages published meanwhile are not received).
    Cut,
    /// A new connection joins with the stored position; the gateway replays after it.
    Rejoin,
    /// The app is killed: what its listener had not returned for is gone with it.
    Restart,
}

fn stream_op() -> impl Strategy<Value = StreamOp> {
    prop_oneof![
        5 => Just(StreamOp::Publish),
        4 => Just(StreamOp::Process),
        1 => Just(StreamOp::Cut),
        1 => Just(StreamOp::Rejoin),
        1 => Just(StreamOp::Restart),
    ]
}

/// Applies the position writes to the model's disk.
fn persist(streams: &mut Streams, disk: &mut BTreeMap<Option<String>, StreamPosition>) {
    for (key, position) in streams.take_writes() {
        let room = key.room().map(str::to_owned);
        match position {
            Some(position) => disk.insert(room, position),
            None => disk.remove(&room),
        };
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_stream_message_reaches_the_app_once_in_offset_order_across_cuts_and_restarts(
        ops in proptest::collection::vec(stream_op(), 1..120),
    ) {
        let key = StreamKey::Room("news".into());
        let epoch = "e1";
        let mut disk = BTreeMap::new();
        let mut streams = Streams::default();
        let join = |offset: u64, recovered: bool| StreamJoin {
            offset,
            epoch: epoch.into(),
            recovered,
            replay_count: 0,
        };
        prop_assert_eq!(streams.on_joined(&key, Some(&join(0, false)), None), Joined::Started);
        persist(&mut streams, &mut disk);
        let mut published = 0u64;
        let mut connected = true;
        let mut pending: Vec<u64> = Vec::new();
        let mut seen: Vec<u64> = Vec::new();
        let receive = |streams: &mut Streams, pending: &mut Vec<u64>, offset: u64| {
            match streams.on_message(&key, offset, epoch) {
                StreamVerdict::Deliver => pending.push(offset),
                StreamVerdict::Duplicate => {}
                StreamVerdict::Reset => panic!("offset {offset}: reset, yet nothing was lost"),
            }
        };
        let ops = ops.into_iter().chain([StreamOp::Rejoin]);
        for op in ops {
            match op {
                StreamOp::Publish => {
                    published += 1;
                    if connected {
                        receive(&mut streams, &mut pending, published);
                    }
                }
                StreamOp::Process => {
                    if !pending.is_empty() {
                        let offset = pending.remove(0);
                        seen.push(offset);
                        streams.on_processed(&key, StreamPosition { offset, epoch: epoch.into() });
                    }
                }
                StreamOp::Cut => connected = false,
                StreamOp::Rejoin => {
                    let since = streams.since(&key).cloned().expect("joined before");
                    prop_assert_eq!(&since, disk.get(&Some("news".to_owned())).unwrap());
                    prop_assert!(since.offset <= published);
                    prop_assert_eq!(streams.on_joined(&key, Some(&join(published, true)), Some(&since)), Joined::Recovered);
                    for offset in since.offset + 1..=published {
                        receive(&mut streams, &mut pending, offset);
                    }
                    connected = true;
                }
                StreamOp::Restart => {
                    streams = Streams::new(disk.clone());
                    pending.clear();
                    connected = false;
                }
            }
            persist(&mut streams, &mut disk);
        }
        seen.append(&mut pending);
        prop_assert_eq!(seen, (1..=published).collect::<Vec<_>>());
    }

    #[test]
    fn the_sdk_inbox_hands_each_seq_over_once_in_order_and_moves_its_cursor_only_forward_after_processing(
        start in 0u64..50,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut inbox = Inbox::new(start);
        // The model: the durable cursor, what was handed over in this process and not yet
        // processed, and the highest seq handed over.
        let mut processed = start;
        let mut pending: Vec<u64> = Vec::new();
        let mut dispatched = start;
        let mut floor: Option<u64> = None;
        for op in ops {
            match op {
                Op::Connect => {
                    let since = inbox.on_connect();
                    prop_assert_eq!(since, processed, "since is the durable cursor");
                    floor = Some(since);
                }
                Op::Message(delta) => {
                    let seq = (dispatched as i64 + delta).max(1) as u64;
                    let verdict = inbox.on_message(Some(seq));
                    match floor {
                        Some(f) if seq <= f => {
                            // Only a gateway that lost its inbox sends this: follow it down.
                            prop_assert_eq!(verdict, Verdict::Restarted { cursor: seq - 1 });
                            processed = seq - 1;
                            pending.push(seq);
                            dispatched = seq;
                            floor = Some(0);
                        }
                        _ if seq <= dispatched => prop_assert_eq!(verdict, Verdict::Duplicate),
                        _ => {
                            prop_assert_eq!(verdict, Verdict::Deliver);
                            prop_assert!(seq > dispatched, "handed over in increasing order");
                            dispatched = seq;
                            pending.push(seq);
                        }
                    }
                }
                Op::Live => prop_assert_eq!(inbox.on_message(None), Verdict::Deliver),
                Op::Process => {
                    if !pending.is_empty() {
                        let seq = pending.remove(0);
                        let moved = inbox.on_processed(seq);
                        if seq > processed {
                            prop_assert_eq!(moved, Some(seq));
                            processed = seq;
                        } else {
                            prop_assert_eq!(moved, None, "the cursor never goes back");
                        }
                    }
                }
                Op::Restart => {
                    // A new process reads the durable cursor.
                    inbox = Inbox::new(processed);
                    pending.clear();
                    dispatched = processed;
                    floor = None;
                }
            }
            prop_assert_eq!(inbox.since(), processed);
        }
    }

    #[test]
    fn redis_key_escaping_is_reversible_and_free_of_key_and_pattern_syntax(
        a in "\\PC{0,40}", b in "[:*?{}\\[\\] \n%a-z]{0,20}",
    ) {
        for text in [&a, &b] {
            let escaped = keys::escape(text);
            prop_assert!(escaped
                .bytes()
                .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-' | b'%')));
            let back = keys::unescape(&escaped);
            prop_assert_eq!(back.as_deref(), Some(text.as_str()));
        }
        if a != b {
            prop_assert_ne!(keys::escape(&a), keys::escape(&b));
            prop_assert_ne!(keys::user("app", &a).inbox, keys::user("app", &b).inbox);
        }
    }
}
