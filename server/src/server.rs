//! Starting and stopping one gateway node: wiring the broker, hub, routes and listener,
//! graceful shutdown (stop accepting, close every socket with 1012, drop this node's
//! registry entries) and, for tests, an abrupt kill.

use crate::api;
use crate::auth::TokenVerifier;
use crate::broker::inbox::Retention;
use crate::broker::memory::{MemoryBroker, MemorySettings};
use crate::broker::redis::client::Target;
use crate::broker::redis::sentinel::SentinelTarget;
use crate::broker::redis::{RedisBroker, RedisSettings};
use crate::broker::timed::Timed;
use crate::broker::Broker;
use crate::config::{redact_url, BrokerConfig, Config};
use crate::gateway::handshake;
use crate::hub::Hub;
use crate::ids::new_server_id;
use crate::state::Shared;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tether_protocol::{close, HttpErrorCode};
use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Why the gateway could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr} (TETHER_BIND): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The JWT key did not load.
    #[error("JWT key rejected: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// The broker could not start.
    #[error("broker: {0}")]
    Broker(String),
}

/// A running gateway node.
pub struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Gateway {
    /// Binds, starts serving, and returns at once.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let node: Arc<str> = Arc::from(new_server_id());
        let hub = Arc::new(Hub::new(node.clone(), config.outbound_queue));
        let broker: Arc<dyn Broker> =
            Arc::new(Timed::new(make_broker(&config, hub.clone()).await?));
        let verifier = TokenVerifier::new(&config.jwt)?;
        let listener = listen(config.bind).map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let shared = Arc::new(Shared::new(config, node.clone(), hub, broker, verifier));
        crate::metrics::start();

        let app = Router::new().route(tether_protocol::WS_PATH, get(handshake::handle));
        #[cfg(feature = "autobahn-echo")]
        let app = app.route("/echo", get(crate::gateway::echo::handle));
        let app = app
            .merge(api::routes(shared.clone()))
            .merge(crate::admin::routes())
            .fallback(|| async {
                api::error::ApiError::new(HttpErrorCode::NotFound, "no such route")
            })
            .with_state(shared.clone());
        let server = tokio::spawn(crate::listener::serve(
            listener,
            app,
            shared.config.handshake_timeout,
            shared.shutdown.clone(),
        ));
        let pruning = shared.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every.tick() => pruning.prune_limiters(),
                    () = pruning.shutdown.cancelled() => return,
                    () = pruning.kill.cancelled() => return,
                }
            }
        });
        // Idle timeouts and token expiries: one sweep over the node's connections, four
        // times per timeout (at most once a second), instead of a timer per connection.
        let sweeping = shared.clone();
        tokio::spawn(async move {
            let timeout_ms = sweeping.config.connection_timeout_ms;
            let period = std::time::Duration::from_millis((timeout_ms / 4).clamp(50, 1000));
            let mut every = tokio::time::interval(period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => sweeping.hub.sweep(crate::clock::now_ms(), timeout_ms),
                    () = sweeping.shutdown.cancelled() => return,
                    () = sweeping.kill.cancelled() => return,
                }
            }
        });
        info!(
            node = %node,
            %addr,
            broker = shared.broker.name(),
            "gateway listening"
        );
        Ok(Gateway {
            shared,
            addr,
            server,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// This node's id.
    pub fn server_id(&self) -> &str {
        &self.shared.node
    }

    /// Stops accepting, closes every connection with 1012, waits for them (at most
    /// `SHUTDOWN_TIMEOUT`), and removes this node's registry entries.
    pub async fn shutdown(self) {
        let shared = self.shared;
        shared.start_draining();
        let open = shared
            .hub
            .close_all(close::SERVICE_RESTART, "server restarting");
        info!(node = %shared.node, connections = open, "graceful shutdown: closing connections with 1012");
        shared.shutdown.cancel();
        shared.connections.close();
        if tokio::time::timeout(shared.config.shutdown_timeout, shared.connections.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = shared.connections.len(),
                "shutdown timeout: dropping the remaining connections"
            );
            shared
                .hub
                .close_all(crate::hub::ABANDON, "shutdown timeout");
        }
        let _ = tokio::time::timeout(shared.config.shutdown_timeout, self.server).await;
        // Keyed backend sends whose callers left: let them record their answers, or a
        // retry would find the key claimed and, 30 s later, send again.
        shared.sends.close();
        if tokio::time::timeout(shared.config.shutdown_timeout, shared.sends.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = shared.sends.len(),
                "shutdown timeout: idempotent sends still running"
            );
        }
        shared.broker.shutdown().await;
        info!(node = %shared.node, "gateway stopped");
    }

    /// Drops every socket without a close frame and stops listening at once, as a crash
    /// would (tests use it to simulate a node dying).
    pub fn kill(self) {
        self.shared.hub.close_all(crate::hub::ABANDON, "killed");
        self.shared.start_draining();
        self.shared.kill.cancel();
        self.shared.broker.halt();
        self.server.abort();
    }
}

/// Accept-queue length. The default (128) overflows when many clients reconnect at once
/// (a node restart, a network coming back): the kernel drops their SYNs and each waits a
/// full second to retry.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn make_broker(config: &Config, hub: Arc<Hub>) -> Result<Arc<dyn Broker>, StartError> {
    let retention = Retention {
        ttl_ms: config.message_ttl_s.saturating_mul(1000),
        max_len: config.max_queue_per_user as usize,
    };
    let dedup_ttl_ms = config.dedup_ttl_s.saturating_mul(1000);
    let redis_settings = |target: Target, sentinel: Option<SentinelTarget>| RedisSettings {
        target,
        sentinel,
        retention,
        dedup_ttl_ms,
        inbound_max_per_app: config.inbound_max_per_app,
        lease_ms: config.registry_ttl.as_millis() as u64,
    };
    let (settings, shown) = match &config.broker {
        BrokerConfig::Sentinel(sentinel) => {
            let target = SentinelTarget::from(sentinel);
            let shown = format!(
                "through sentinels {} (master {:?})",
                target.sentinels_text(),
                target.master_name
            );
            let no_urls = Target {
                urls: Vec::new(),
                cluster: false,
            };
            (redis_settings(no_urls, Some(target)), shown)
        }
        BrokerConfig::Redis(redis) => {
            let target = Target {
                urls: redis.urls.clone(),
                cluster: redis.cluster,
            };
            let shown: Vec<String> = redis.urls.iter().map(|u| redact_url(u)).collect();
            (
                redis_settings(target, None),
                format!("at {}", shown.join(",")),
            )
        }
        BrokerConfig::Memory => {
            info!("no Redis configured: embedded in-memory broker (one node only; inboxes and inbound messages do not survive a restart)");
            return Ok(Arc::new(MemoryBroker::new(
                hub,
                MemorySettings {
                    retention,
                    dedup_ttl_ms,
                    inbound_max_per_app: usize::try_from(config.inbound_max_per_app)
                        .unwrap_or(usize::MAX),
                },
            )));
        }
    };
    let broker = RedisBroker::connect(hub, settings)
        .await
        .map_err(|e| StartError::Broker(format!("cannot use Redis {shown}: {e}")))?;
    Ok(Arc::new(broker))
}
