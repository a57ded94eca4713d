//! Redis Sentinel: the broker's three connections go to the master the sentinels name,
//! and follow it through a failover without a restart.
//!
//! redis-rs resolves a master through the sentinels ([`redis::sentinel::Sentinel`]:
//! `SENTINEL MASTERS` on each sentinel, then `ROLE` on the named master), but its
//! reconnecting [`ConnectionManager`] stays on the address it was built with. So each
//! broker connection is a [`SentinelConn`]: a manager behind a lock that [`watch`]
//! replaces when the sentinels name another master. The watcher asks the sentinels once a
//! second, and at once when a command failed in a way a failover explains (`READONLY`
//! from a demoted master, a refused or dropped connection, a timeout). On a switch it
//! opens the three connections to the new master, moves every subscription over, and
//! marks live delivery as possibly missed, so the maintenance task restores this node's
//! registry entries and every connection catches up from its inbox.

use super::connection::{self, Conn};
use super::keys;
use super::Inner;
use parking_lot::RwLock;
use redis::aio::ConnectionManager;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, ProtocolVersion, PushInfo,
    RedisConnectionInfo, RedisError, RedisResult, ServerErrorKind,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tracing::{info, warn};

/// How often the sentinels are asked which server is the master.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Shortest pause between two checks (a burst of failed commands asks once).
const MIN_PAUSE: Duration = Duration::from_millis(100);
/// Longest a lookup through the sentinels may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect attempts of the subscriber per disconnection.
const SUBSCRIBER_RETRIES: usize = 6;
/// Channels per SUBSCRIBE when moving subscriptions to a new master.
const SUBSCRIBE_BATCH: usize = 500;

/// Where the sentinels are and what they watch.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// Sentinel addresses (host, port).
    pub sentinels: Vec<(String, u16)>,
    /// The master name the sentinels monitor (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// Password of the sentinels (`requirepass` in sentinel.conf), if any.
    pub sentinel_password: Option<String>,
    /// Password of the master and replicas.
    pub password: Option<String>,
    /// Database number.
    pub db: i64,
    /// Replicas that must confirm a durable write before it counts as stored (`WAIT`);
    /// 0: do not wait.
    pub sync_replicas: u32,
}

impl std::fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("sentinels", &self.sentinels_text())
            .field("master_name", &self.master_name)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "***"),
            )
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .field("sync_replicas", &self.sync_replicas)
            .finish()
    }
}

impl SentinelTarget {
    /// `host:port,host:port`, for logs and errors (no secret in it).
    pub fn sentinels_text(&self) -> String {
        self.sentinels
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// State shared by the three connections: the sentinels, the current master.
pub(crate) struct Failover {
    target: SentinelTarget,
    resolver: tokio::sync::Mutex<Sentinel>,
    node: SentinelNodeConnectionInfo,
    /// The master the connections use now (`host:port`).
    master: RwLock<Option<String>>,
    /// Whether the last lookup through the sentinels named a usable master.
    sentinels_ok: AtomicBool,
    wake: Notify,
}

impl Failover {
    fn new(target: SentinelTarget) -> RedisResult<Failover> {
        let sentinels = target
            .sentinels
            .iter()
            .map(|(host, port)| {
                let info = ConnectionAddr::Tcp(host.clone(), *port).into_connection_info()?;
                let mut settings = RedisConnectionInfo::default();
                if let Some(password) = &target.sentinel_password {
                    settings = settings.set_password(password);
                }
                Ok(info.set_redis_settings(settings))
            })
            .collect::<RedisResult<Vec<ConnectionInfo>>>()?;
        let resolver = Sentinel::build(sentinels)?;
        let mut settings = RedisConnectionInfo::default()
            .set_db(target.db)
            .set_protocol(ProtocolVersion::RESP3);
        if let Some(password) = &target.password {
            settings = settings.set_password(password);
        }
        Ok(Failover {
            target,
            resolver: tokio::sync::Mutex::new(resolver),
            node: SentinelNodeConnectionInfo::default().set_redis_connection_info(settings),
            master: RwLock::new(None),
            sentinels_ok: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// Asks the sentinels for the master (checked with `ROLE`).
    async fn resolve(&self) -> RedisResult<ConnectionInfo> {
        let lookup = async {
            let mut resolver = self.resolver.lock().await;
            resolver
                .async_master_for(&self.target.master_name, Some(&self.node))
                .await
                .map(|client| client.get_connection_info().clone())
        };
        let result = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from((
                ErrorKind::Io,
                "sentinel lookup timed out",
                format!("no answer within {RESOLVE_TIMEOUT:?}"),
            ))),
        };
        self.sentinels_ok.store(result.is_ok(), Ordering::Release);
        result
    }

    /// The master the connections use now, `host:port`.
    pub(crate) fn master(&self) -> Option<String> {
        self.master.read().clone()
    }

    /// Whether the sentinels named a usable master at the last lookup.
    pub(crate) fn sentinels_ok(&self) -> bool {
        self.sentinels_ok.load(Ordering::Acquire)
    }

    /// Asks the watcher to check the sentinels now.
    fn nudge(&self) {
        self.wake.notify_one();
    }
}

fn address(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
        other => other.to_string(),
    }
}

/// One broker connection to the current master.
#[derive(Clone)]
pub struct SentinelConn {
    failover: Arc<Failover>,
    current: Arc<RwLock<ConnectionManager>>,
    push: Option<UnboundedSender<PushInfo>>,
    retries: usize,
}

impl SentinelConn {
    /// The connection to use now.
    pub(super) fn current(&self) -> ConnectionManager {
        self.current.read().clone()
    }

    /// Replicas a durable write waits for.
    pub(super) fn sync_replicas(&self) -> u32 {
        self.failover.target.sync_replicas
    }

    /// Asks the watcher to check the sentinels now.
    pub(super) fn nudge(&self) {
        self.failover.nudge();
    }

    /// Looks at a command's result: a failure a failover explains wakes the watcher.
    pub(super) fn observe<T>(&self, result: &RedisResult<T>) {
        if let Err(e) = result {
            let failover_like = e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
                || e.is_io_error()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.is_unrecoverable_error();
            if failover_like {
                self.failover.nudge();
            }
        }
    }

    async fn open(&self, master: &ConnectionInfo) -> RedisResult<ConnectionManager> {
        connection::manager(master.clone(), self.push.clone(), self.retries).await
    }
}

/// The three broker connections to the master the sentinels name, and their shared state.
pub(super) struct Opened {
    pub(super) failover: Arc<Failover>,
    pub(super) main: Conn,
    pub(super) publisher: Conn,
    pub(super) subscriber: Conn,
}

/// Resolves the master through the sentinels and opens `main`, `publisher` and
/// `subscriber` (with `push`) to it.
pub(super) async fn open(
    target: &SentinelTarget,
    push: UnboundedSender<PushInfo>,
) -> RedisResult<Opened> {
    let failover = Arc::new(Failover::new(target.clone())?);
    let master = failover.resolve().await.map_err(|e| {
        RedisError::from((
            e.kind(),
            "no master from the sentinels",
            format!(
                "sentinels {} name no usable master {:?}: {e}",
                target.sentinels_text(),
                target.master_name
            ),
        ))
    })?;
    let make = |push: Option<UnboundedSender<PushInfo>>, retries: usize| {
        let failover = failover.clone();
        let master = master.clone();
        async move {
            let manager = connection::manager(master, push.clone(), retries).await?;
            Ok::<_, RedisError>(SentinelConn {
                failover,
                current: Arc::new(RwLock::new(manager)),
                push,
                retries,
            })
        }
    };
    let main = make(None, 1).await?;
    let publisher = make(None, 1).await?;
    // Few retries per reconnect (the maintenance task's checks start another one each
    // second): a replaced subscriber must not keep trying to reach the old master for
    // long, since a demoted master still relays published messages to its subscribers.
    let subscriber = make(Some(push), SUBSCRIBER_RETRIES).await?;
    *failover.master.write() = Some(address(&master));
    info!(master = %address(&master), name = %target.master_name, sentinels = %target.sentinels_text(), "Redis master found through the sentinels");
    Ok(Opened {
        failover,
        main: Conn::Sentinel(main),
        publisher: Conn::Sentinel(publisher),
        subscriber: Conn::Sentinel(subscriber),
    })
}

fn sentinel_conn(conn: &Conn) -> Option<&SentinelConn> {
    match conn {
        Conn::Sentinel(s) => Some(s),
        _ => None,
    }
}

/// Follows the master: asks the sentinels once a second (and at once when a command
/// failed like a failover), and moves the three connections when they name another one.
pub(super) async fn watch(inner: Arc<Inner>, failover: Arc<Failover>) {
    let mut reported_down = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = failover.wake.notified() => {}
            () = inner.stop.cancelled() => return,
        }
        match failover.resolve().await {
            Err(e) => {
                // During a failover the old master is flagged down and no other is
                // named yet; the next checks find the new one.
                if !reported_down {
                    warn!(node = %inner.node, error = %e, name = %failover.target.master_name, "the sentinels name no usable master; keeping the current connections and asking again");
                    reported_down = true;
                }
            }
            Ok(master) => {
                reported_down = false;
                let now = address(&master);
                let before = failover.master();
                if before.as_deref() != Some(now.as_str()) {
                    info!(node = %inner.node, from = before.as_deref().unwrap_or("none"), to = %now, "the sentinels name a new Redis master; moving the connections");
                    if let Err(e) = switch(&inner, &failover, &master).await {
                        warn!(node = %inner.node, master = %now, error = %e, "could not move to the new Redis master; retrying");
                    } else {
                        info!(node = %inner.node, master = %now, "connected to the new Redis master; connections catch up from their inboxes");
                    }
                }
            }
        }
        tokio::time::sleep(MIN_PAUSE).await;
    }
}

/// Opens the three connections to `master`, moves the subscriptions and swaps them in.
/// The current master is recorded only when everything worked, so a failed switch is
/// tried again at the next check.
async fn switch(inner: &Inner, failover: &Failover, master: &ConnectionInfo) -> RedisResult<()> {
    let (Some(main), Some(publisher), Some(subscriber)) = (
        sentinel_conn(&inner.main),
        sentinel_conn(&inner.publisher),
        sentinel_conn(&inner.subscriber),
    ) else {
        return Ok(());
    };
    // Health shows the move; the maintenance task sees the links come back and restores
    // the registry entries and heartbeat, then asks connections to catch up.
    inner.main_link.set(false);
    inner.publisher_link.set(false);
    inner.subscriber_link.set(false);
    inner.missed_live.store(true, Ordering::Release);
    let new_main = main.open(master).await?;
    let new_publisher = publisher.open(master).await?;
    let new_subscriber = subscriber.open(master).await?;
    *main.current.write() = new_main;
    *publisher.current.write() = new_publisher;
    // Every subscribe and unsubscribe holds its stripe: with all of them held, none is
    // in flight on the old connection, and later ones go to the new one.
    let mut stripes = Vec::with_capacity(inner.stripes.len());
    for stripe in &inner.stripes {
        stripes.push(stripe.lock().await);
    }
    let old_subscriber = std::mem::replace(&mut *subscriber.current.write(), new_subscriber);
    let mut channels: Vec<String> = inner.subscribed.lock().iter().cloned().collect();
    channels.push(keys::node_channel(&inner.node));
    let mut moved = Ok(());
    for batch in channels.chunks(SUBSCRIBE_BATCH) {
        if let Err(e) = inner.subscriber.subscribe(batch).await {
            moved = Err(e);
            break;
        }
    }
    drop(stripes);
    // The old master (now a replica, if it lives) still relays published messages to its
    // subscribers: leave its channels so nothing arrives twice.
    let mut old = old_subscriber;
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let all: Vec<String> = channels.clone();
        for batch in all.chunks(SUBSCRIBE_BATCH) {
            if old.unsubscribe(batch).await.is_err() {
                break;
            }
        }
    })
    .await;
    drop(old);
    moved?;
    *failover.master.write() = Some(address(master));
    inner.missed_live.store(true, Ordering::Release);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_passwords() {
        let target = SentinelTarget {
            sentinels: vec![("s1".into(), 26379), ("s2".into(), 26380)],
            master_name: "mymaster".into(),
            sentinel_password: Some("sentinel-secret".into()),
            password: Some("data-secret".into()),
            db: 2,
            sync_replicas: 1,
        };
        let shown = format!("{target:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("s1:26379,s2:26380"), "{shown}");
    }
}
