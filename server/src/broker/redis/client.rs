//! Connections to Redis: one Redis, a Redis Cluster, or the master of a Sentinel-managed
//! set ([`super::sentinel`]), behind one small type so the broker code does not care
//! which. RESP3 everywhere; the subscriber connection gets a push channel and resubscribes
//! by itself after a reconnect.

use super::sentinel::SentinelConn;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo, Pipeline, ProtocolVersion,
    PushInfo, RedisError, RedisResult, Role, ScriptInvocation, ToRedisArgs,
};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// How long a command may wait for its answer before it fails (Redis stopped, network cut).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a durable write waits for its replicas behind Sentinel.
const WAIT_REPLICAS_MS: u64 = 1000;

/// A command connection (multiplexed, reconnecting).
#[derive(Clone)]
pub enum Conn {
    /// One Redis.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
    /// The current master of a Sentinel-managed set; replaced when the sentinels name
    /// another master.
    Sentinel(SentinelConn),
}

impl Conn {
    /// Runs a command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self.clone() {
            Conn::Single(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            Conn::Sentinel(s) => {
                let result = cmd.query_async(&mut s.current()).await;
                s.observe(&result);
                result
            }
        }
    }

    /// Runs a script (EVALSHA, loading it on first use).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self.clone() {
            Conn::Single(mut c) => invocation.invoke_async(&mut c).await,
            Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
            Conn::Sentinel(s) => {
                let result = invocation.invoke_async(&mut s.current()).await;
                s.observe(&result);
                result
            }
        }
    }

    /// Runs a script whose writes must survive a failover before the caller answers
    /// success (an inbox append, a client message). Behind Sentinel with
    /// `REDIS_SENTINEL_SYNC_REPLICAS` > 0, the write is followed by `WAIT` on the same
    /// connection, and fewer confirming replicas than asked is an error: the write may
    /// be lost when a replica is promoted, so it is not reported as stored. Elsewhere the
    /// same as [`Conn::invoke`].
    pub async fn invoke_durable<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        self.invoke_confirmed(invocation, self.durable_replicas())
            .await
    }

    /// Replicas a durable write waits for now (0 but behind Sentinel).
    pub fn durable_replicas(&self) -> u32 {
        match self {
            Conn::Sentinel(s) => s.sync_replicas(),
            _ => 0,
        }
    }

    /// Whether one script may touch different users' keys: not on a Cluster, where they
    /// live in different slots.
    pub fn spans_users(&self) -> bool {
        !matches!(self, Conn::Cluster(_))
    }

    /// Whether inbox appends for different users may share one script run: where one
    /// script may span users, and not where each write waits for replicas before it is
    /// published.
    pub fn batches_appends(&self) -> bool {
        self.spans_users() && self.durable_replicas() == 0
    }

    /// [`Conn::invoke_durable`] with the number of replicas to wait for.
    pub async fn invoke_confirmed<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        replicas: u32,
    ) -> RedisResult<T> {
        let Conn::Sentinel(s) = self else {
            return self.invoke(invocation).await;
        };
        let mut conn = s.current();
        let result = invocation.invoke_async(&mut conn).await;
        s.observe(&result);
        let value = result?;
        if replicas == 0 {
            return Ok(value);
        }
        let acked = redis::cmd("WAIT")
            .arg(replicas)
            .arg(WAIT_REPLICAS_MS)
            .query_async::<u64>(&mut conn)
            .await;
        s.observe(&acked);
        let acked = acked?;
        if acked < u64::from(replicas) {
            s.nudge();
            return Err(RedisError::from((
                ErrorKind::Io,
                "write not confirmed by enough replicas",
                format!(
                    "{acked} of {replicas} replica(s) confirmed within {WAIT_REPLICAS_MS} ms (REDIS_SENTINEL_SYNC_REPLICAS); a failover could lose it"
                ),
            )));
        }
        Ok(value)
    }

    /// Runs a pipeline.
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        match self.clone() {
            Conn::Single(mut c) => pipe.query_async(&mut c).await,
            Conn::Cluster(mut c) => pipe.query_async(&mut c).await,
            Conn::Sentinel(s) => {
                let result = pipe.query_async(&mut s.current()).await;
                s.observe(&result);
                result
            }
        }
    }

    /// Subscribes to channels (SSUBSCRIBE on a cluster).
    pub async fn subscribe(&self, channel: impl ToRedisArgs) -> RedisResult<()> {
        match self.clone() {
            Conn::Single(mut c) => c.subscribe(channel).await,
            Conn::Cluster(mut c) => c.ssubscribe(channel).await,
            Conn::Sentinel(s) => {
                let result = s.current().subscribe(channel).await;
                s.observe(&result);
                result
            }
        }
    }

    /// Unsubscribes from channels.
    pub async fn unsubscribe(&self, channel: impl ToRedisArgs) -> RedisResult<()> {
        match self.clone() {
            Conn::Single(mut c) => c.unsubscribe(channel).await,
            Conn::Cluster(mut c) => c.sunsubscribe(channel).await,
            Conn::Sentinel(s) => {
                let result = s.current().unsubscribe(channel).await;
                s.observe(&result);
                result
            }
        }
    }

    /// Checks the connection for `/health`: PING, and behind Sentinel also that the
    /// server is still a master (a demoted master answers PING but refuses writes).
    pub async fn check(&self) -> RedisResult<()> {
        if !matches!(self, Conn::Sentinel(_)) {
            return self
                .query::<redis::Value>(&redis::cmd("PING"))
                .await
                .map(|_| ());
        }
        match self.query::<Role>(&redis::cmd("ROLE")).await? {
            Role::Primary { .. } => Ok(()),
            _ => {
                if let Conn::Sentinel(s) = self {
                    s.nudge();
                }
                Err(RedisError::from((
                    ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                    "the server is no longer the master",
                )))
            }
        }
    }

    /// Whether this is a cluster (sharded pub/sub).
    pub fn sharded(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

/// Where Redis is.
#[derive(Clone)]
pub struct Target {
    /// Seed URLs (one for a single Redis).
    pub urls: Vec<String>,
    /// Cluster mode.
    pub cluster: bool,
}

/// Opens a command connection. `retries`: reconnect attempts per failed command (small
/// for commands, so callers fail fast while Redis is down).
pub async fn open(
    target: &Target,
    push: Option<UnboundedSender<PushInfo>>,
    retries: usize,
) -> RedisResult<Conn> {
    if target.cluster {
        let mut builder = ClusterClientBuilder::new(target.urls.clone())
            .use_protocol(ProtocolVersion::RESP3)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(retries.min(u32::MAX as usize) as u32);
        if let Some(push) = push {
            builder = builder.push_sender(push);
        }
        let client = builder.build()?;
        return Ok(Conn::Cluster(client.get_async_connection().await?));
    }
    let url = target.urls.first().cloned().unwrap_or_default();
    let info = url.as_str().into_connection_info()?;
    Ok(Conn::Single(manager(info, push, retries).await?))
}

/// Opens one reconnecting connection (RESP3) to the server at `info`; with `push`, the
/// subscriber kind (push channel, automatic resubscription).
pub(super) async fn manager(
    info: ConnectionInfo,
    push: Option<UnboundedSender<PushInfo>>,
    retries: usize,
) -> RedisResult<ConnectionManager> {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(settings))?;
    let mut config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(retries)
        .set_max_delay(Duration::from_secs(1));
    if let Some(push) = push {
        config = config.set_push_sender(push).set_automatic_resubscription();
    }
    ConnectionManager::new_with_config(client, config).await
}
