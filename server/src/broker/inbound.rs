//! The embedded broker's inbound log: client app messages kept per app for the backend to
//! read with `GET /v1/inbound`, de-duplicated by (app, user, id) for the dedup window.

use super::{InboundMessage, StoreOutcome};
use std::collections::{HashMap, HashSet, VecDeque};
use tether_protocol::api::{InboundPage, InboundRecord};

#[derive(Debug)]
struct Entry {
    cursor: u64,
    message: InboundMessage,
}

/// Remembers which ids were stored, for how long.
#[derive(Debug, Default)]
struct Dedup {
    seen: HashSet<(String, String, String)>,
    expiry: VecDeque<(u64, (String, String, String))>,
}

impl Dedup {
    fn expire(&mut self, now_ms: u64) {
        while let Some((at, _)) = self.expiry.front() {
            if *at > now_ms {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_front() {
                self.seen.remove(&key);
            }
        }
    }

    /// True when the key is new (and now remembered until `now + ttl`).
    fn first_time(&mut self, key: (String, String, String), now_ms: u64, ttl_ms: u64) -> bool {
        self.expire(now_ms);
        if self.seen.contains(&key) {
            return false;
        }
        self.seen.insert(key.clone());
        self.expiry.push_back((now_ms.saturating_add(ttl_ms), key));
        true
    }
}

/// Per-app logs plus the dedup set.
#[derive(Debug, Default)]
pub struct InboundLog {
    apps: HashMap<String, VecDeque<Entry>>,
    next_cursor: u64,
    dedup: Dedup,
}

impl InboundLog {
    /// Stores a message unless its id was seen within `dedup_ttl_ms`; keeps at most
    /// `max_per_app` messages per app (the oldest go first).
    pub fn store(
        &mut self,
        message: InboundMessage,
        now_ms: u64,
        dedup_ttl_ms: u64,
        max_per_app: usize,
    ) -> StoreOutcome {
        let key = (
            message.app.to_string(),
            message.user.to_string(),
            message.id.clone(),
        );
        if !self.dedup.first_time(key, now_ms, dedup_ttl_ms) {
            return StoreOutcome::Duplicate;
        }
        self.next_cursor += 1;
        let log = self.apps.entry(message.app.to_string()).or_default();
        log.push_back(Entry {
            cursor: self.next_cursor,
            message,
        });
        while log.len() > max_per_app {
            log.pop_front();
        }
        StoreOutcome::Stored
    }

    /// Messages of `app` after `after` (all kept when `None`), at most `limit`.
    pub fn read(&self, app: &str, after: Option<u64>, limit: usize) -> InboundPage {
        let after = after.unwrap_or(0);
        let messages: Vec<InboundRecord> = self
            .apps
            .get(app)
            .into_iter()
            .flatten()
            .filter(|e| e.cursor > after)
            .take(limit)
            .map(|e| InboundRecord {
                cursor: e.cursor.to_string(),
                user_id: e.message.user.to_string(),
                device: e.message.device.as_deref().map(str::to_owned),
                kind: e.message.kind.clone(),
                id: e.message.id.clone(),
                data: e.message.data.clone(),
                ts: e.message.ts,
            })
            .collect();
        let next = messages
            .last()
            .map(|m| m.cursor.clone())
            .or_else(|| (after > 0).then(|| after.to_string()));
        InboundPage { messages, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn message(user: &str, id: &str) -> InboundMessage {
        InboundMessage {
            app: Arc::from("a"),
            user: Arc::from(user),
            device: Some(Arc::from("d1")),
            kind: "chat".into(),
            id: id.into(),
            data: None,
            ts: 1,
        }
    }

    #[test]
    fn a_resent_id_is_stored_once_within_the_window() {
        let mut log = InboundLog::default();
        assert_eq!(
            log.store(message("u", "m1"), 0, 100, 10),
            StoreOutcome::Stored
        );
        assert_eq!(
            log.store(message("u", "m1"), 50, 100, 10),
            StoreOutcome::Duplicate
        );
        assert_eq!(
            log.store(message("v", "m1"), 50, 100, 10),
            StoreOutcome::Stored,
            "ids are per user"
        );
        assert_eq!(
            log.store(message("u", "m1"), 100, 100, 10),
            StoreOutcome::Stored,
            "window passed"
        );
        assert_eq!(log.read("a", None, 100).messages.len(), 3);
    }

    #[test]
    fn reading_pages_with_cursors() {
        let mut log = InboundLog::default();
        for i in 0..5 {
            log.store(message("u", &format!("m{i}")), 0, 100, 10);
        }
        let first = log.read("a", None, 2);
        assert_eq!(
            first
                .messages
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
            ["m0", "m1"]
        );
        let after: u64 = first.next.unwrap().parse().unwrap();
        let second = log.read("a", Some(after), 10);
        assert_eq!(second.messages.len(), 3);
        let end = log.read("a", second.next.as_deref().map(|c| c.parse().unwrap()), 10);
        assert!(end.messages.is_empty());
        assert_eq!(end.next, second.next, "next stays put at the end");
        assert!(log.read("other", None, 10).messages.is_empty());
    }

    #[test]
    fn the_log_is_bounded_per_app() {
        let mut log = InboundLog::default();
        for i in 0..5 {
            log.store(message("u", &format!("m{i}")), 0, 100, 3);
        }
        let page = log.read("a", None, 10);
        assert_eq!(
            page.messages
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
            ["m2", "m3", "m4"]
        );
    }
}
