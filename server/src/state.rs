//! What every request handler and connection task of one gateway shares.

use crate::auth::TokenVerifier;
use crate::broker::Broker;
use crate::config::Config;
use crate::hub::Hub;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The gateway's shared state.
pub struct Shared {
    /// Validated configuration.
    pub config: Config,
    /// This node's id.
    pub node: Arc<str>,
    /// Local connections.
    pub hub: Arc<Hub>,
    /// The backplane.
    pub broker: Arc<dyn Broker>,
    /// Client token checks.
    pub verifier: TokenVerifier,
    /// Handshakes per IP, when limited.
    pub handshake_limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Frames per connection, when limited. Keyed here rather than one limiter inside each
    /// connection: a quiet connection then holds no limiter state at all.
    pub conn_limiter: Option<DefaultKeyedRateLimiter<crate::hub::ConnId>>,
    /// Frames per (app, user) across the user's connections on this node, when limited.
    pub user_limiter: Option<DefaultKeyedRateLimiter<(Arc<str>, Arc<str>)>>,
    /// Set once graceful shutdown starts: new handshakes get 503.
    draining: AtomicBool,
    /// Cancelled at graceful shutdown: every connection closes with 1012.
    pub shutdown: CancellationToken,
    /// Cancelled to drop every socket without a close frame (tests simulate a crash).
    pub kill: CancellationToken,
    /// Connection tasks, so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Backend sends with an `Idempotency-Key` that run on their own (their caller may
    /// have stopped waiting), so shutdown lets them finish and record their answers.
    pub sends: TaskTracker,
    /// Counters touched per frame.
    pub metrics: crate::metrics::HotMetrics,
}

impl Shared {
    /// Assembles the state.
    pub fn new(
        config: Config,
        node: Arc<str>,
        hub: Arc<Hub>,
        broker: Arc<dyn Broker>,
        verifier: TokenVerifier,
    ) -> Shared {
        Shared {
            handshake_limiter: keyed_limiter(config.handshake_rate_per_ip),
            conn_limiter: keyed_limiter(config.rate_limit_per_connection),
            user_limiter: keyed_limiter(config.rate_limit_per_user),
            config,
            node,
            hub,
            broker,
            verifier,
            draining: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            kill: CancellationToken::new(),
            connections: TaskTracker::new(),
            sends: TaskTracker::new(),
            metrics: crate::metrics::HotMetrics::new(),
        }
    }

    /// Whether graceful shutdown has started.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Forgets rate-limit state of keys that have been quiet (bounded memory).
    pub fn prune_limiters(&self) {
        prune(&self.handshake_limiter);
        prune(&self.conn_limiter);
        prune(&self.user_limiter);
    }

    /// Starts graceful shutdown: refuse new handshakes.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// A limiter of `rate` per second per key with a burst of twice that; `None` for 0 (off).
fn keyed_limiter<K: Clone + Eq + Hash>(rate: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(rate).map(|rate| {
        let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
    })
}

/// Forgets the state of keys that have been quiet.
fn prune<K: Clone + Eq + Hash>(limiter: &Option<DefaultKeyedRateLimiter<K>>) {
    if let Some(limiter) = limiter {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}
