//! Connections to Redis: one Redis or a Redis Cluster, behind one small type so the
//! broker code does not care which. RESP3 everywhere; the subscriber connection gets a
//! push channel and resubscribes by itself after a reconnect.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    FromRedisValue, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisResult,
    ScriptInvocation, ToRedisArgs,
};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// How long a command may wait for its answer before it fails (Redis stopped, network cut).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A command connection (multiplexed, reconnecting).
#[derive(Clone)]
pub enum Conn {
    /// One Redis.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Runs a command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self.clone() {
            Conn::Single(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
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
        }
    }

    /// Runs a pipeline.
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        match self.clone() {
            Conn::Single(mut c) => pipe.query_async(&mut c).await,
            Conn::Cluster(mut c) => pipe.query_async(&mut c).await,
        }
    }

    /// Subscribes to channels (SSUBSCRIBE on a cluster).
    pub async fn subscribe(&self, channel: impl ToRedisArgs) -> RedisResult<()> {
        match self.clone() {
            Conn::Single(mut c) => c.subscribe(channel).await,
            Conn::Cluster(mut c) => c.ssubscribe(channel).await,
        }
    }

    /// Unsubscribes from channels.
    pub async fn unsubscribe(&self, channel: impl ToRedisArgs) -> RedisResult<()> {
        match self.clone() {
            Conn::Single(mut c) => c.unsubscribe(channel).await,
            Conn::Cluster(mut c) => c.sunsubscribe(channel).await,
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
    Ok(Conn::Single(
        ConnectionManager::new_with_config(client, config).await?,
    ))
}
