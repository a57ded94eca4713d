//! Role `recover` (S8): subscribers of one room with history that behave as the SDK does
//! when their network goes away: each keeps its place in the room's stream (the offset and
//! epoch of the last message it got), reconnects with full-jitter backoff when its
//! connection fails, and joins again with `since` that place. Each keeps a ledger of the
//! offsets it received (the gaps and the duplicates, not every offset) and, for every
//! rejoin, when it reconnected, when `room_joined` came and whether it said `recovered`,
//! and when the last replayed message arrived.

use super::{emit, full_jitter, histogram, now_ns, percentiles, source, Recover};
use crate::ws::{number_after, Frame};
use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// One rejoin after a lost connection (ns since the epoch).
#[derive(Debug, Clone, Default, Serialize)]
struct Rejoin {
    /// When the client saw its connection fail.
    down_ns: u64,
    /// When the attempt that got through started.
    connect_ns: u64,
    /// When `connection_established` came.
    open_ns: u64,
    /// When `room_joined` came.
    joined_ns: Option<u64>,
    /// What it said.
    recovered: Option<bool>,
    /// Messages it announced.
    replay_count: u32,
    /// When every message up to the answer's offset had arrived.
    recovered_ns: Option<u64>,
}

/// One subscriber's ledger.
#[derive(Debug, Default, Serialize)]
struct Sub {
    /// Whether it goes through the fault proxy.
    cut: bool,
    /// The stream's epoch as the client holds it.
    epoch: String,
    /// The offset its first join answered: it is owed every message after it.
    start: u64,
    /// The highest offset received (or skipped to after `recovered: false`).
    last: u64,
    /// Offsets skipped (inclusive ranges): a message above `last + 1` came.
    gaps: Vec<(u64, u64)>,
    /// Offsets the gateway said it could not replay (`recovered: false`): the app would
    /// refetch, so they are told, not lost.
    told: Vec<(u64, u64)>,
    /// Messages at or below `last` that filled no gap.
    duplicates: u64,
    /// Messages that filled a gap (arrived after a higher offset).
    late: u64,
    /// Messages of another epoch than the one held.
    epoch_changes: u32,
    /// Stream messages received.
    received: u64,
    /// Connections lost.
    disconnects: u32,
    rejoins: Vec<Rejoin>,
    #[serde(skip)]
    joined: bool,
    /// The rejoin waiting for its replay, and the offset the replay ends at.
    #[serde(skip)]
    pending: Option<(usize, u64)>,
}

impl Sub {
    /// A stream message; returns whether it belongs to a replay (its latency says nothing
    /// about the live path).
    fn message(&mut self, offset: u64, epoch: &[u8], now: u64) -> bool {
        self.received += 1;
        let replayed = self.pending.is_some_and(|(_, until)| offset <= until);
        if epoch != self.epoch.as_bytes() {
            self.epoch_changes += 1;
            self.epoch = String::from_utf8_lossy(epoch).into_owned();
            self.last = offset;
            return replayed;
        }
        if offset == self.last + 1 {
            self.last = offset;
        } else if offset > self.last + 1 {
            self.gaps.push((self.last + 1, offset - 1));
            self.last = offset;
        } else if let Some(at) = self
            .gaps
            .iter()
            .position(|(from, to)| *from <= offset && offset <= *to)
        {
            let (from, to) = self.gaps.remove(at);
            if offset > from {
                self.gaps.push((from, offset - 1));
            }
            if offset < to {
                self.gaps.push((offset + 1, to));
            }
            self.late += 1;
        } else {
            self.duplicates += 1;
        }
        self.check_replayed(now);
        replayed
    }

    fn check_replayed(&mut self, now: u64) {
        if let Some((at, until)) = self.pending {
            if self.last >= until {
                self.rejoins[at].recovered_ns = Some(now);
                self.pending = None;
            }
        }
    }

    /// `room_joined` with its stream part.
    fn joined(&mut self, offset: u64, epoch: &str, recovered: bool, replay_count: u32, now: u64) {
        if !self.joined {
            self.joined = true;
            self.start = offset;
            self.last = offset;
            self.epoch = epoch.to_owned();
            return;
        }
        let at = self.rejoins.len().checked_sub(1);
        if let Some(rejoin) = at.and_then(|at| self.rejoins.get_mut(at)) {
            rejoin.joined_ns = Some(now);
            rejoin.recovered = Some(recovered);
            rejoin.replay_count = replay_count;
        }
        if epoch != self.epoch {
            self.epoch_changes += 1;
            self.epoch = epoch.to_owned();
        }
        if recovered {
            if let Some(at) = at {
                self.pending = Some((at, offset));
                self.check_replayed(now);
            }
        } else {
            if offset > self.last {
                self.told.push((self.last + 1, offset));
            }
            self.last = offset;
            self.pending = None;
        }
    }
}

/// The text between `key` and the next `"`.
fn text_after<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let len = text[at..].iter().position(|b| *b == b'"')?;
    Some(&text[at..at + len])
}

struct Shared {
    config: Recover,
    joined: Cell<u32>,
    errors: Cell<u32>,
    latency: RefCell<Histogram<u64>>,
}

impl Shared {
    /// Handles one text frame of subscriber `sub`.
    fn frame(&self, sub: &RefCell<Sub>, text: &[u8]) {
        let now = now_ns();
        if text.starts_with(br#"{"offset":"#) {
            let (Some(offset), Some(epoch)) = (
                number_after(text, br#""offset":"#),
                text_after(text, br#""epoch":""#),
            ) else {
                return;
            };
            let replayed = sub.borrow_mut().message(offset, epoch, now);
            if let (false, Some(sent)) = (replayed, number_after(text, br#""t":"#)) {
                let _ = self
                    .latency
                    .borrow_mut()
                    .record((now.saturating_sub(sent) / 1000).max(1));
            }
            return;
        }
        if text.windows(13).any(|w| w == b"\"room_joined\"") {
            let Ok(frame) = serde_json::from_slice::<serde_json::Value>(text) else {
                return;
            };
            let data = &frame["data"];
            let mut sub = sub.borrow_mut();
            let first = !sub.joined;
            sub.joined(
                data["offset"].as_u64().unwrap_or(0),
                data["epoch"].as_str().unwrap_or(""),
                data["recovered"].as_bool().unwrap_or(false),
                data["replayCount"].as_u64().unwrap_or(0) as u32,
                now,
            );
            if first {
                self.joined.set(self.joined.get() + 1);
            }
            return;
        }
        if text.windows(9).any(|w| w == b"\"error\"") {
            if self.errors.get() < 3 {
                eprintln!("recover: {}", String::from_utf8_lossy(text));
            }
            self.errors.set(self.errors.get() + 1);
        }
    }
}

async fn subscriber(shared: Rc<Shared>, i: u32, sub: Rc<RefCell<Sub>>) {
    let config = &shared.config;
    let user = format!("r{}", config.first_user + u64::from(i));
    let source = source(&config.sources, i);
    let target = if sub.borrow().cut {
        config.proxied
    } else {
        config.direct
    };
    let mut attempt = 0u32;
    let mut down_ns: Option<u64> = None;
    loop {
        let connect_ns = now_ns();
        let mut ws = match crate::client::open_tether(target, source, &user, "", 4096).await {
            Ok(ws) => ws,
            Err(_) => {
                tokio::time::sleep(full_jitter(attempt, 100, 2_000)).await;
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        let join = {
            let mut sub = sub.borrow_mut();
            if let Some(down_ns) = down_ns.take().filter(|_| sub.joined) {
                sub.rejoins.push(Rejoin {
                    down_ns,
                    connect_ns,
                    open_ns: now_ns(),
                    ..Rejoin::default()
                });
            }
            if sub.joined {
                format!(
                    r#"{{"type":"join_room","data":{{"room":"{}","since":{{"offset":{},"epoch":"{}"}}}}}}"#,
                    config.room, sub.last, sub.epoch
                )
            } else {
                format!(
                    r#"{{"type":"join_room","data":{{"room":"{}"}}}}"#,
                    config.room
                )
            }
        };
        if ws.send_text(&join).await.is_ok() {
            loop {
                match ws.next().await {
                    Ok(Frame::Text(text)) => shared.frame(&sub, text),
                    Ok(Frame::Other) => {}
                    Ok(Frame::Close(_)) | Err(_) => break,
                }
            }
        }
        {
            let mut sub = sub.borrow_mut();
            sub.disconnects += 1;
            sub.pending = None;
        }
        down_ns = Some(now_ns());
        // The first retry waits a full-jitter slice of the base, as the SDK does after an
        // abnormal close.
        tokio::time::sleep(full_jitter(0, 100, 2_000)).await;
    }
}

pub async fn run(config: Recover) -> Result<()> {
    let count = config.count;
    let cut_every = config.cut_every;
    let shared = Rc::new(Shared {
        config,
        joined: Cell::new(0),
        errors: Cell::new(0),
        latency: RefCell::new(histogram()),
    });
    let subs: Vec<Rc<RefCell<Sub>>> = (0..count)
        .map(|i| {
            Rc::new(RefCell::new(Sub {
                cut: cut_every > 0 && i % cut_every == 0,
                ..Sub::default()
            }))
        })
        .collect();
    for (i, sub) in subs.iter().enumerate() {
        tokio::task::spawn_local(subscriber(shared.clone(), i as u32, sub.clone()));
        if i % 256 == 255 {
            // Let the first ones connect before the next batch starts.
            while shared.joined.get() + 64 < i as u32 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    while shared.joined.get() < count {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    emit(json!({"ready": count}));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "go" => shared.latency.borrow_mut().reset(),
            "stop" => break,
            _ => {}
        }
    }
    let subs: Vec<serde_json::Value> = subs
        .iter()
        .map(|s| serde_json::to_value(&*s.borrow()).unwrap_or_default())
        .collect();
    let latency = shared.latency.borrow();
    emit(json!({"result": {
        "subscribers": subs,
        "errors": shared.errors.get(),
        "latency_us": percentiles(&latency),
        "latency_hist": crate::report::encode_histogram(&latency)?,
    }}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined_at(offset: u64) -> Sub {
        let mut sub = Sub::default();
        sub.joined(offset, "e", false, 0, 0);
        sub
    }

    #[test]
    fn the_ledger_keeps_gaps_duplicates_and_late_arrivals() {
        let mut sub = joined_at(10);
        for offset in [11, 12, 15, 12, 13, 16] {
            sub.message(offset, b"e", 0);
        }
        assert_eq!(sub.last, 16);
        assert_eq!(sub.gaps, vec![(14, 14)]);
        assert_eq!((sub.duplicates, sub.late, sub.received), (1, 1, 6));
    }

    #[test]
    fn a_rejoin_is_recovered_when_its_replay_has_arrived() {
        let mut sub = joined_at(0);
        sub.message(1, b"e", 0);
        sub.rejoins.push(Rejoin::default());
        sub.joined(3, "e", true, 2, 5);
        assert!(sub.message(2, b"e", 6), "part of the replay");
        assert_eq!(sub.rejoins[0].recovered_ns, None);
        assert!(sub.message(3, b"e", 7));
        assert_eq!(sub.rejoins[0].recovered_ns, Some(7));
        assert!(!sub.message(4, b"e", 8), "live");
        assert!(sub.gaps.is_empty() && sub.duplicates == 0);
    }

    #[test]
    fn recovered_false_is_told_not_lost() {
        let mut sub = joined_at(0);
        sub.message(1, b"e", 0);
        sub.rejoins.push(Rejoin::default());
        sub.joined(9, "e", false, 0, 5);
        assert_eq!(sub.told, vec![(2, 9)]);
        sub.message(10, b"e", 6);
        assert!(sub.gaps.is_empty());
        assert_eq!(sub.rejoins[0].recovered, Some(false));
    }

    #[test]
    fn text_is_read_up_to_the_quote() {
        assert_eq!(
            text_after(
                br#"{"offset":3,"epoch":"ab12","type":"x"}"#,
                br#""epoch":""#
            ),
            Some(&b"ab12"[..])
        );
    }
}
