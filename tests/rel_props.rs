//! Properties that were missing next to the existing ones (state machine:
//! `sdk_state_machine.rs`; backoff: `sdk_backoff.rs`; the gateway's inbox cursors:
//! `server/src/broker/inbox.rs`): the SDK's inbox cursor rules (`src/inbox.rs`) against a
//! model, over random interleavings of connects, messages (fresh, repeated, from an inbox
//! that restarted), processing and restarts; and the Redis key escaping as a property
//! (reversible, so two ids never share a key, and free of key and pattern syntax).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

use proptest::prelude::*;
use tether::inbox::{Inbox, Verdict};
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

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
