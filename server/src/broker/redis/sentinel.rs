//! Redis Sentinel: the broker's three connections go to the master the sentinels name,
//! and follow it through a failover without a restart.
//!
//! redis-rs can resolve a master through the sentinels (`redis::sentinel`), but its
//! reconnecting [`ConnectionManager`] stays on the address it was built with, and the
//! failover state (`failover_in_progress`, which replicas are in sync) is not exposed.
//! So the sentinels are asked here (`SENTINEL MASTER`, `SENTINEL REPLICAS`), and each
//! broker connection is a [`SentinelConn`]: a manager behind a lock that [`watch`]
//! replaces when the sentinels name another master (checked with `ROLE` before use).
//! The watcher asks once a second (`REDIS_SENTINEL_CHECK_INTERVAL`), at once when a
//! sentinel announces a new master (`+switch-master`, to which it stays subscribed on one
//! sentinel at a time), and at once when a command failed in a way a failover explains
//! (`READONLY` from a demoted master, a refused or dropped connection, a timeout). On a
//! switch it opens the three connections to the new master, moves every subscription
//! over, and marks live delivery as possibly missed, so the maintenance task restores
//! this node's registry entries and every connection catches up from its inbox.
//!
//! Durable writes (a user message, a client message) wait for replicas (`WAIT`) before
//! they are reported stored, so a promoted replica has them. How many: the configured
//! `REDIS_SENTINEL_SYNC_REPLICAS`, lowered to the replicas connected to the master (its
//! `ROLE`), but never lowered while a failover is in progress or while the sentinels
//! name another master (the window in which an old master still accepts writes that
//! the promotion discards). A master left without replicas after a failover thus keeps
//! taking writes, and one whose replica was just promoted refuses them.

use super::client::{self, Conn};
use super::keys;
use super::Inner;
use futures_util::StreamExt;
use parking_lot::RwLock;
use redis::aio::ConnectionManager;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    ProtocolVersion, PushInfo, RedisConnectionInfo, RedisError, RedisResult, Role, ServerErrorKind,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// After a `+switch-master` announcement, the sentinel asked may not know yet: ask again
/// this often, for this long, until the connections have moved.
const ANNOUNCED_RETRY: Duration = Duration::from_millis(200);
const ANNOUNCED_FOR: Duration = Duration::from_secs(5);
/// Pause before listening on the next sentinel when a subscription ended.
const LISTEN_PAUSE: Duration = Duration::from_secs(1);
/// How often a `+switch-master` subscription is checked with a PING.
const LISTEN_PING: Duration = Duration::from_secs(5);
/// The routine check interval in ms: `REDIS_SENTINEL_CHECK_INTERVAL` must lie within it,
/// and a [`SentinelTarget::check_interval`] outside it is taken as the nearest bound.
pub const CHECK_INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=60_000;
/// Shortest pause between two checks (a burst of failed commands asks once).
const MIN_PAUSE: Duration = Duration::from_millis(100);
/// Longest a lookup through the sentinels may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Connect and response timeout towards one sentinel.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect attempts of the subscriber per disconnection.
const SUBSCRIBER_RETRIES: usize = 6;
/// Channels per SUBSCRIBE when moving subscriptions to a new master.
const SUBSCRIBE_BATCH: usize = 500;

/// Where the sentinels are and what they watch. Make one with [`SentinelTarget::new`] (or
/// from the gateway's settings) and set the fields that differ from its defaults.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Time between two routine checks of which server is the master (besides the
    /// sentinels' `+switch-master` announcements and failed commands); 1 s is usual,
    /// and anything outside 100 ms to 60 s is taken as the nearest bound.
    pub check_interval: Duration,
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
            .field("check_interval", &self.check_interval)
            .finish()
    }
}

impl SentinelTarget {
    /// The sentinels at `sentinels` watching `master_name`, with the gateway's defaults:
    /// no passwords, database 0, one replica confirms each durable write, routine checks
    /// once a second.
    pub fn new(sentinels: Vec<(String, u16)>, master_name: impl Into<String>) -> SentinelTarget {
        SentinelTarget {
            sentinels,
            master_name: master_name.into(),
            sentinel_password: None,
            password: None,
            db: 0,
            sync_replicas: 1,
            check_interval: Duration::from_secs(1),
        }
    }

    /// `host:port,host:port`, for logs and errors (no secret in it).
    pub fn sentinels_text(&self) -> String {
        self.sentinels
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One sentinel and the connection to it, opened on first use.
struct SentinelNode {
    info: ConnectionInfo,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

/// What the sentinels say about the master.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    /// The master they name, `host:port`.
    master: (String, u16),
    /// A failover of it is running.
    failover_in_progress: bool,
}

/// State shared by the three connections: the sentinels, the current master.
pub(crate) struct Failover {
    target: SentinelTarget,
    sentinels: Vec<SentinelNode>,
    /// How the connections log in to the master.
    settings: RedisConnectionInfo,
    /// The master the connections use now (`host:port`).
    master: RwLock<Option<String>>,
    /// Replicas a durable write waits for now.
    required_replicas: AtomicU32,
    /// Whether the last lookup through the sentinels named a usable master.
    sentinels_ok: AtomicBool,
    /// Whether the sentinels name a master the connections have not moved to yet.
    moving: AtomicBool,
    /// The master a sentinel last announced (`+switch-master`), `host:port`, and when.
    announced: parking_lot::Mutex<Option<(String, Instant)>>,
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
                Ok(SentinelNode {
                    info: info.set_redis_settings(settings),
                    conn: tokio::sync::Mutex::new(None),
                })
            })
            .collect::<RedisResult<Vec<_>>>()?;
        if sentinels.is_empty() {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no sentinel address given",
            )));
        }
        let mut settings = RedisConnectionInfo::default()
            .set_db(target.db)
            .set_protocol(ProtocolVersion::RESP3);
        if let Some(password) = &target.password {
            settings = settings.set_password(password);
        }
        Ok(Failover {
            required_replicas: AtomicU32::new(target.sync_replicas),
            target,
            sentinels,
            settings,
            master: RwLock::new(None),
            sentinels_ok: AtomicBool::new(false),
            moving: AtomicBool::new(false),
            announced: parking_lot::Mutex::new(None),
            wake: Notify::new(),
        })
    }

    /// Runs `cmd` on the first sentinel that answers.
    async fn ask<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        let mut last = None;
        for node in &self.sentinels {
            let mut cached = node.conn.lock().await;
            if cached.is_none() {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(SENTINEL_TIMEOUT))
                    .set_response_timeout(Some(SENTINEL_TIMEOUT));
                let opened = match redis::Client::open(node.info.clone()) {
                    Ok(client) => {
                        client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await
                    }
                    Err(e) => Err(e),
                };
                match opened {
                    Ok(conn) => *cached = Some(conn),
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
            let Some(conn) = cached.as_mut() else {
                continue;
            };
            match cmd.query_async::<T>(conn).await {
                Ok(value) => return Ok(value),
                Err(e) => {
                    if e.is_io_error() || e.is_unrecoverable_error() || e.is_timeout() {
                        *cached = None;
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisError::from((ErrorKind::InvalidClientConfig, "no sentinel address given"))
        }))
    }

    /// Asks the sentinels about the master and its replicas.
    async fn view(&self) -> RedisResult<View> {
        let name = &self.target.master_name;
        let lookup = async {
            let master: HashMap<String, String> = self
                .ask(redis::cmd("SENTINEL").arg("MASTER").arg(name))
                .await?;
            let flags = master.get("flags").map(String::as_str).unwrap_or("");
            let address = master
                .get("ip")
                .cloned()
                .zip(master.get("port").and_then(|p| p.parse::<u16>().ok()));
            let Some(address) = address else {
                return Err(RedisError::from((
                    ErrorKind::UnexpectedReturnType,
                    "sentinel answer without the master's ip and port",
                )));
            };
            if flags.contains("s_down") || flags.contains("o_down") {
                return Err(RedisError::from((
                    ErrorKind::MasterNameNotFoundBySentinel,
                    "the master is down and no other is promoted yet",
                    format!("{}:{} flagged {flags}", address.0, address.1),
                )));
            }
            Ok(View {
                master: address,
                failover_in_progress: flags.contains("failover_in_progress"),
            })
        };
        let result = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(result) => result,
            Err(_) => Err(timed_out("sentinel lookup timed out", RESOLVE_TIMEOUT)),
        };
        self.sentinels_ok.store(result.is_ok(), Ordering::Release);
        result
    }

    /// How the connections reach `master`.
    fn master_info(&self, master: &(String, u16)) -> RedisResult<ConnectionInfo> {
        Ok(ConnectionAddr::Tcp(master.0.clone(), master.1)
            .into_connection_info()?
            .set_redis_settings(self.settings.clone()))
    }

    /// Sets how many replicas durable writes wait for: the configured number, lowered to
    /// the replicas `connected` to the master in use only when the sentinels name that
    /// master and no failover of it runs.
    fn set_required(&self, view: Option<&View>, connected: Option<u32>) {
        let current = self.master();
        let required = required_replicas(
            self.target.sync_replicas,
            current.as_deref(),
            view,
            connected,
        );
        let before = self.required_replicas.swap(required, Ordering::AcqRel);
        if before != required {
            info!(
                master = current.as_deref().unwrap_or("none"),
                before,
                now = required,
                "replicas a stored message waits for"
            );
        }
    }

    /// The master the connections use now, `host:port`.
    pub(crate) fn master(&self) -> Option<String> {
        self.master.read().clone()
    }

    /// Whether the sentinels named a usable master at the last lookup.
    pub(crate) fn sentinels_ok(&self) -> bool {
        self.sentinels_ok.load(Ordering::Acquire)
    }

    /// Whether the sentinels name a master the connections have not moved to yet (set
    /// when the follower sees it, cleared once a move succeeds or the sentinels name the
    /// master in use again). Until then `main` may still reach the old master, whose
    /// inboxes can hold writes no replica confirmed (a send that failed during the
    /// failover): an inbox read then would show a client a message the promotion
    /// discards, whose seq the new master hands out again.
    /// A fresh `+switch-master` announcement of another master counts too.
    pub(crate) fn moving(&self) -> bool {
        self.moving.load(Ordering::Acquire) || self.announced_elsewhere()
    }

    /// Asks the watcher to check the sentinels now.
    fn nudge(&self) {
        self.wake.notify_one();
    }

    /// How long the follower waits before its next check: briefly while a master a
    /// sentinel announced is not the one in use yet (the sentinel asked may learn of the
    /// switch a moment later than the one that announced it), else the check interval.
    fn next_check(&self) -> Duration {
        let mut announced = self.announced.lock();
        if self.still_announced(announced.as_ref()) {
            return ANNOUNCED_RETRY;
        }
        *announced = None;
        self.target.check_interval.clamp(
            Duration::from_millis(*CHECK_INTERVAL_MS.start()),
            Duration::from_millis(*CHECK_INTERVAL_MS.end()),
        )
    }

    /// Whether a sentinel announced, less than [`ANNOUNCED_FOR`] ago, a master other than
    /// the one in use (the sentinel the follower asks may not know yet).
    fn announced_elsewhere(&self) -> bool {
        self.still_announced(self.announced.lock().as_ref())
    }

    fn still_announced(&self, announced: Option<&(String, Instant)>) -> bool {
        announced.is_some_and(|(master, at)| {
            self.master().as_deref() != Some(master.as_str()) && at.elapsed() < ANNOUNCED_FOR
        })
    }

    /// Records a `+switch-master` announcement (`<name> <old ip> <old port> <new ip>
    /// <new port>`) if it is about our master, and wakes the follower.
    fn on_announcement(&self, text: &str, who: &str) {
        let [name, _, _, ip, port] = text.split(' ').collect::<Vec<_>>()[..] else {
            return;
        };
        if name != self.target.master_name {
            return;
        }
        let master = format!("{ip}:{port}");
        info!(node = %who, to = %master, "a sentinel announced a new Redis master");
        *self.announced.lock() = Some((master, Instant::now()));
        self.nudge();
    }
}

/// Stays subscribed to `+switch-master` on one sentinel at a time, moving to the next
/// when a subscription cannot be made or ends, until `stop`. The routine checks remain
/// the safety net for an announcement missed meanwhile.
async fn listen_for_switches(failover: Arc<Failover>, stop: CancellationToken, who: String) {
    for node in failover.sentinels.iter().cycle() {
        let ended = tokio::select! {
            ended = listen_on(&failover, node, &who) => ended,
            () = stop.cancelled() => return,
        };
        debug!(node = %who, sentinel = %address(&node.info), error = %ended, "no +switch-master subscription on this sentinel; trying the next");
        tokio::select! {
            () = tokio::time::sleep(LISTEN_PAUSE) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Subscribes to `+switch-master` on `node` and passes what it announces on; returns
/// why the subscription ended. A PING every [`LISTEN_PING`] notices a sentinel whose
/// host died without closing the connection (nothing else would: the stream just stays
/// silent), so the listener moves on to the next one.
async fn listen_on(failover: &Failover, node: &SentinelNode, who: &str) -> RedisError {
    let subscribed = async {
        let client = redis::Client::open(node.info.clone())?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe("+switch-master").await?;
        RedisResult::Ok(pubsub)
    };
    let pubsub = match tokio::time::timeout(SENTINEL_TIMEOUT, subscribed).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => return e,
        Err(_) => return timed_out("sentinel subscription timed out", SENTINEL_TIMEOUT),
    };
    debug!(node = %who, sentinel = %address(&node.info), "listening for +switch-master");
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(LISTEN_PING);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => match message {
                Some(message) => {
                    if let Ok(text) = message.get_payload::<String>() {
                        failover.on_announcement(&text, who);
                    }
                }
                None => return RedisError::from((ErrorKind::Io, "the sentinel ended the subscription")),
            },
            _ = ping.tick() => {
                match tokio::time::timeout(SENTINEL_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return e,
                    Err(_) => {
                        return timed_out(
                            "the sentinel stopped answering its subscription's PING",
                            SENTINEL_TIMEOUT,
                        )
                    }
                }
            }
        }
    }
}

/// An I/O error for a sentinel that gave no answer within `limit`.
fn timed_out(what: &'static str, limit: Duration) -> RedisError {
    RedisError::from((ErrorKind::Io, what, format!("no answer within {limit:?}")))
}

/// Replicas a durable write waits for: `configured`, lowered to the replicas `connected`
/// to the master in use only when the sentinels name that master (`current`) and no
/// failover of it runs; `configured` whenever something is unknown.
fn required_replicas(
    configured: u32,
    current: Option<&str>,
    view: Option<&View>,
    connected: Option<u32>,
) -> u32 {
    match (view, connected) {
        (Some(view), Some(connected))
            if !view.failover_in_progress
                && current == Some(address_text(&view.master).as_str()) =>
        {
            configured.min(connected)
        }
        _ => configured,
    }
}

/// Replicas connected to the master behind `conn` (its `ROLE`); None when it is no
/// master or does not answer.
async fn connected_replicas(conn: &Conn) -> Option<u32> {
    match conn.query::<Role>(&redis::cmd("ROLE")).await.ok()? {
        Role::Primary { replicas, .. } => u32::try_from(replicas.len()).ok(),
        _ => None,
    }
}

fn address_text((host, port): &(String, u16)) -> String {
    format!("{host}:{port}")
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

    /// Replicas a durable write waits for now.
    pub(super) fn sync_replicas(&self) -> u32 {
        self.failover.required_replicas.load(Ordering::Acquire)
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
        client::manager(master.clone(), self.push.clone(), self.retries).await
    }

    /// A connection to `master` (`push`: where its pub/sub messages go).
    async fn connect(
        failover: Arc<Failover>,
        master: &ConnectionInfo,
        push: Option<UnboundedSender<PushInfo>>,
        retries: usize,
    ) -> RedisResult<SentinelConn> {
        let manager = client::manager(master.clone(), push.clone(), retries).await?;
        Ok(SentinelConn {
            failover,
            current: Arc::new(RwLock::new(manager)),
            push,
            retries,
        })
    }
}

/// Asks the sentinels for the master: the shared failover state, what they said, and
/// how to reach the master.
async fn resolve(target: &SentinelTarget) -> RedisResult<(Arc<Failover>, View, ConnectionInfo)> {
    let failover = Arc::new(Failover::new(target.clone())?);
    let view = failover.view().await.map_err(|e| {
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
    let master = failover.master_info(&view.master)?;
    Ok((failover, view, master))
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
    let (failover, view, master) = resolve(target).await?;
    let main = SentinelConn::connect(failover.clone(), &master, None, 1).await?;
    let publisher = SentinelConn::connect(failover.clone(), &master, None, 1).await?;
    // Few retries per reconnect (the maintenance task's checks start another one each
    // second): a replaced subscriber must not keep trying to reach the old master for
    // long, since a demoted master still relays published messages to its subscribers.
    let subscriber =
        SentinelConn::connect(failover.clone(), &master, Some(push), SUBSCRIBER_RETRIES).await?;
    let mut probe = main.current();
    ensure_master(&mut probe).await?;
    *failover.master.write() = Some(address(&master));
    let main = Conn::Sentinel(main);
    failover.set_required(Some(&view), connected_replicas(&main).await);
    info!(master = %address(&master), name = %target.master_name, sentinels = %target.sentinels_text(), "Redis master found through the sentinels");
    Ok(Opened {
        failover,
        main,
        publisher: Conn::Sentinel(publisher),
        subscriber: Conn::Sentinel(subscriber),
    })
}

/// Fails unless the server behind `conn` says it is a master.
async fn ensure_master(conn: &mut ConnectionManager) -> RedisResult<()> {
    match redis::cmd("ROLE").query_async::<Role>(conn).await? {
        Role::Primary { .. } => Ok(()),
        _ => Err(RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "the server the sentinels name is not a master (yet)",
        ))),
    }
}

fn sentinel_conn(conn: &Conn) -> Option<&SentinelConn> {
    match conn {
        Conn::Sentinel(s) => Some(s),
        _ => None,
    }
}

/// Follows the master for a gateway node: moves its three connections when the
/// sentinels name another one (see [`follow`]).
pub(super) async fn watch(inner: Arc<Inner>, failover: Arc<Failover>) {
    let (main, stop, node) = (inner.main.clone(), inner.stop.clone(), inner.node.clone());
    let move_to = |master: ConnectionInfo| {
        let (inner, failover) = (inner.clone(), failover.clone());
        async move { switch(&inner, &failover, &master).await }
    };
    follow(failover.clone(), main, stop, &node, move_to).await;
}

/// One connection to the master the sentinels name, which follows it through failovers
/// until `stop` (a backend's [`crate::publisher::Publisher`]). Durable writes through it
/// wait for replicas as the gateway's do.
pub(crate) async fn open_following(
    target: &SentinelTarget,
    stop: CancellationToken,
) -> RedisResult<Conn> {
    let (failover, view, master) = resolve(target).await?;
    let conn = SentinelConn::connect(failover.clone(), &master, None, 1).await?;
    ensure_master(&mut conn.current()).await?;
    *failover.master.write() = Some(address(&master));
    let main = Conn::Sentinel(conn.clone());
    failover.set_required(Some(&view), connected_replicas(&main).await);
    info!(master = %address(&master), name = %target.master_name, sentinels = %target.sentinels_text(), "publisher: Redis master found through the sentinels");
    let move_to = {
        let failover = failover.clone();
        move |master: ConnectionInfo| {
            let (conn, failover) = (conn.clone(), failover.clone());
            async move {
                let mut moved = conn.open(&master).await?;
                ensure_master(&mut moved).await?;
                *conn.current.write() = moved;
                *failover.master.write() = Some(address(&master));
                Ok(())
            }
        }
    };
    tokio::spawn({
        let main = main.clone();
        async move { follow(failover, main, stop, "publisher", move_to).await }
    });
    Ok(main)
}

/// Follows the master: asks the sentinels every check interval, at once when a sentinel
/// announces a switch (see [`listen_for_switches`]) and when a command failed like a
/// failover, and calls `move_to` when they name another one, until
/// `stop`. `move_to` records the new master once everything moved, so a failed move is
/// tried again at the next check. `who` names the follower in logs.
async fn follow<M, F>(
    failover: Arc<Failover>,
    main: Conn,
    stop: CancellationToken,
    who: &str,
    move_to: M,
) where
    M: Fn(ConnectionInfo) -> F,
    F: Future<Output = RedisResult<()>>,
{
    let listening = stop.child_token();
    tokio::spawn(listen_for_switches(
        failover.clone(),
        listening.clone(),
        who.to_owned(),
    ));
    let _stop_listening = listening.drop_guard();
    let mut reported_down = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(failover.next_check()) => {}
            () = failover.wake.notified() => {}
            () = stop.cancelled() => return,
        }
        match failover.view().await {
            Err(e) => {
                failover.set_required(None, None);
                // During a failover the old master is flagged down and no other is
                // named yet; the next checks find the new one.
                if !reported_down {
                    warn!(node = %who, error = %e, name = %failover.target.master_name, "the sentinels name no usable master; keeping the current connections and asking again");
                    reported_down = true;
                }
            }
            Ok(view) => {
                reported_down = false;
                let now = address_text(&view.master);
                let before = failover.master();
                if before.as_deref() == Some(now.as_str()) {
                    failover.moving.store(false, Ordering::Release);
                } else {
                    // Until the move is done, writes still going to the old master wait
                    // for every configured replica (and fail when it has lost them), and
                    // nothing reads an inbox there.
                    failover.moving.store(true, Ordering::Release);
                    failover.set_required(None, None);
                    info!(node = %who, from = before.as_deref().unwrap_or("none"), to = %now, "the sentinels name a new Redis master; moving the connections");
                    let moved = match failover.master_info(&view.master) {
                        Ok(master) => move_to(master).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = moved {
                        warn!(node = %who, master = %now, error = %e, "could not move to the new Redis master; retrying");
                    } else {
                        failover.moving.store(false, Ordering::Release);
                        info!(node = %who, master = %now, "connected to the new Redis master");
                    }
                }
                failover.set_required(Some(&view), connected_replicas(&main).await);
            }
        }
        tokio::time::sleep(MIN_PAUSE).await;
    }
}

/// Moves the node's three connections and its subscriptions to `master`. The current
/// master is recorded only when everything worked, so a failed switch is tried again at
/// the next check. Until one succeeds, connections do not catch up from the inboxes (see
/// [`Failover::moving`]); they do once it is done.
async fn switch(inner: &Inner, failover: &Failover, master: &ConnectionInfo) -> RedisResult<()> {
    let (Some(main), Some(publisher), Some(subscriber)) = (
        sentinel_conn(&inner.main),
        sentinel_conn(&inner.publisher),
        sentinel_conn(&inner.subscriber),
    ) else {
        return Ok(());
    };
    let moved = move_connections(inner, main, publisher, subscriber, master).await;
    if moved.is_ok() {
        *failover.master.write() = Some(address(master));
        // Connections catch up from the new master's inboxes (a failed move does so once
        // it is tried again and done).
        inner.missed_live.store(true, Ordering::Release);
    }
    moved
}

/// Opens the three connections to `master`, swaps them in and moves the subscriptions.
async fn move_connections(
    inner: &Inner,
    main: &SentinelConn,
    publisher: &SentinelConn,
    subscriber: &SentinelConn,
    master: &ConnectionInfo,
) -> RedisResult<()> {
    // Health shows the move; the maintenance task sees the links come back and restores
    // the registry entries and heartbeat, then (the move done) asks connections to catch up.
    inner.main_link.set(false);
    inner.publisher_link.set(false);
    inner.subscriber_link.set(false);
    let mut new_main = main.open(master).await?;
    ensure_master(&mut new_main).await?;
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
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_wait_for_every_configured_replica_unless_the_master_is_settled() {
        let view = |port: u16, failover_in_progress: bool| View {
            master: ("10.0.0.1".to_owned(), port),
            failover_in_progress,
        };
        let current = Some("10.0.0.1:6379");
        // Settled: lowered to the replicas connected (a master left alone after a failover).
        assert_eq!(
            required_replicas(1, current, Some(&view(6379, false)), Some(0)),
            0
        );
        assert_eq!(
            required_replicas(2, current, Some(&view(6379, false)), Some(1)),
            1
        );
        assert_eq!(
            required_replicas(1, current, Some(&view(6379, false)), Some(3)),
            1
        );
        // A failover of the master in use runs: its replica may be promoted right now.
        assert_eq!(
            required_replicas(1, current, Some(&view(6379, true)), Some(0)),
            1
        );
        // The sentinels name another master: this one may be discarded.
        assert_eq!(
            required_replicas(1, current, Some(&view(6380, false)), Some(0)),
            1
        );
        // Nothing known.
        assert_eq!(required_replicas(1, current, None, Some(0)), 1);
        assert_eq!(
            required_replicas(1, current, Some(&view(6379, false)), None),
            1
        );
        assert_eq!(
            required_replicas(1, None, Some(&view(6379, false)), Some(0)),
            1
        );
        assert_eq!(required_replicas(0, current, None, None), 0);
    }

    #[test]
    fn only_announcements_about_our_master_hurry_the_checks() {
        let mut target = SentinelTarget::new(vec![("s1".into(), 26379)], "mymaster");
        target.check_interval = Duration::from_secs(7);
        let failover = Failover::new(target).unwrap();
        *failover.master.write() = Some("10.0.0.1:6379".into());
        failover.on_announcement("othermaster 10.0.0.1 6379 10.0.0.2 6379", "test");
        failover.on_announcement("mymaster 10.0.0.1 6379", "test");
        assert_eq!(failover.next_check(), Duration::from_secs(7));
        failover.on_announcement("mymaster 10.0.0.1 6379 10.0.0.2 6379", "test");
        assert_eq!(failover.next_check(), ANNOUNCED_RETRY);
        assert_eq!(failover.next_check(), ANNOUNCED_RETRY, "until the move");
        assert!(failover.moving(), "inbox reads wait for the move");
        *failover.master.write() = Some("10.0.0.2:6379".into());
        assert!(!failover.moving());
        assert_eq!(failover.next_check(), Duration::from_secs(7));
        assert!(failover.announced.lock().is_none());
    }

    #[test]
    fn the_check_interval_stays_within_its_bounds() {
        for (set, used) in [
            (Duration::ZERO, Duration::from_millis(100)),
            (Duration::from_secs(2), Duration::from_secs(2)),
            (Duration::from_secs(3600), Duration::from_secs(60)),
        ] {
            let mut target = SentinelTarget::new(vec![("s1".into(), 26379)], "mymaster");
            target.check_interval = set;
            assert_eq!(Failover::new(target).unwrap().next_check(), used);
        }
    }

    #[test]
    fn debug_output_hides_the_passwords() {
        let target = SentinelTarget {
            sentinels: vec![("s1".into(), 26379), ("s2".into(), 26380)],
            master_name: "mymaster".into(),
            sentinel_password: Some("sentinel-secret".into()),
            password: Some("data-secret".into()),
            db: 2,
            sync_replicas: 1,
            check_interval: Duration::from_secs(1),
        };
        let shown = format!("{target:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("s1:26379,s2:26380"), "{shown}");
    }
}
