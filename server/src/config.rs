//! Gateway configuration: every setting is an environment variable (read from `.env` too)
//! and a command-line flag of the same name (docs/protocol.md §10). Parsing happens once at
//! start; a bad value stops start-up with a message that names the variable.

use crate::broker::idempotency::{MAX_TTL_S, MIN_TTL_S};
use crate::broker::redis::sentinel::SentinelTarget;
use crate::broker::stream::{HistoryLimits, StreamName, StreamSettings};
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

// The token settings belong to `auth`; the configuration names them where they are read.
pub use crate::auth::{JwtAlgorithm, JwtConfig, JwtKey};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, for production log pipelines.
    Json,
}

/// The command line (and environment) of `tether-server`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tether-server",
    version,
    about = "Tether gateway: real-time WebSocket connections for mobile apps"
)]
pub struct Cli {
    /// Address to listen on.
    #[arg(
        long = "bind",
        env = "TETHER_BIND",
        value_name = "TETHER_BIND",
        default_value = "127.0.0.1:8080"
    )]
    pub bind: SocketAddr,

    /// Redis URL (redis://[:password@]host:port/db). Unset: the embedded single-node broker.
    #[arg(long = "redis-url", env = "REDIS_URL", value_name = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis host (used when REDIS_URL is unset).
    #[arg(long = "redis-host", env = "REDIS_HOST", value_name = "REDIS_HOST")]
    pub redis_host: Option<String>,
    /// Redis port.
    #[arg(long = "redis-port", env = "REDIS_PORT", value_name = "REDIS_PORT")]
    pub redis_port: Option<u16>,
    /// Redis password.
    #[arg(
        long = "redis-password",
        env = "REDIS_PASSWORD",
        value_name = "REDIS_PASSWORD",
        hide_env_values = true
    )]
    pub redis_password: Option<String>,
    /// Redis database number.
    #[arg(long = "redis-db", env = "REDIS_DB", value_name = "REDIS_DB")]
    pub redis_db: Option<u32>,
    /// Redis Cluster mode: REDIS_URL lists seed nodes, comma-separated; pub/sub is sharded
    /// (SSUBSCRIBE/SPUBLISH). Implied when REDIS_URL lists more than one node.
    #[arg(long = "redis-cluster", env = "REDIS_CLUSTER", value_name = "REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_cluster: bool,
    /// Redis Sentinel addresses, comma-separated host:port (`s1:26379,s2:26379`). The
    /// master is looked up through them and followed after a failover; REDIS_PASSWORD and
    /// REDIS_DB apply to the master. Not together with REDIS_URL, REDIS_HOST or REDIS_CLUSTER.
    #[arg(
        long = "redis-sentinels",
        env = "REDIS_SENTINELS",
        value_name = "REDIS_SENTINELS"
    )]
    pub redis_sentinels: Option<String>,
    /// The master name the sentinels monitor (required with REDIS_SENTINELS).
    #[arg(
        long = "redis-sentinel-master",
        env = "REDIS_SENTINEL_MASTER",
        value_name = "REDIS_SENTINEL_MASTER"
    )]
    pub redis_sentinel_master: Option<String>,
    /// Password of the sentinels themselves (their `requirepass`), if any.
    #[arg(
        long = "redis-sentinel-password",
        env = "REDIS_SENTINEL_PASSWORD",
        value_name = "REDIS_SENTINEL_PASSWORD",
        hide_env_values = true
    )]
    pub redis_sentinel_password: Option<String>,
    /// Replicas that must confirm a user message or client message (Redis WAIT, 1 s)
    /// before it is reported stored; 0: do not wait (a failover may then lose the last
    /// writes that were answered as stored).
    #[arg(
        long = "redis-sentinel-sync-replicas",
        env = "REDIS_SENTINEL_SYNC_REPLICAS",
        value_name = "REDIS_SENTINEL_SYNC_REPLICAS",
        default_value_t = 1
    )]
    pub redis_sentinel_sync_replicas: u32,
    /// Milliseconds between two questions to the sentinels about the master, on top of
    /// their `+switch-master` announcements and the checks a failed command triggers.
    #[arg(
        long = "redis-sentinel-check-interval",
        env = "REDIS_SENTINEL_CHECK_INTERVAL",
        value_name = "REDIS_SENTINEL_CHECK_INTERVAL",
        default_value_t = 1000
    )]
    pub redis_sentinel_check_interval: u64,
    /// Seconds a connection's registry entry lives without refresh (a dead node blocks
    /// no one for longer).
    #[arg(
        long = "ws-registry-ttl",
        env = "WS_REGISTRY_TTL",
        value_name = "WS_REGISTRY_TTL",
        default_value_t = 300
    )]
    pub ws_registry_ttl: u64,

    /// HS256 secret for client tokens.
    #[arg(
        long = "jwt-secret",
        env = "JWT_SECRET",
        value_name = "JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// PEM file with the public key for RS256/ES256 tokens.
    #[arg(
        long = "jwt-public-key-file",
        env = "JWT_PUBLIC_KEY_FILE",
        value_name = "JWT_PUBLIC_KEY_FILE"
    )]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Token algorithm: HS256, RS256 or ES256 (default: HS256, or RS256 when a key file is given).
    #[arg(
        long = "jwt-algorithm",
        env = "JWT_ALGORITHM",
        value_name = "JWT_ALGORITHM",
        ignore_case = true
    )]
    pub jwt_algorithm: Option<JwtAlgorithm>,
    /// Required `iss` claim.
    #[arg(long = "jwt-issuer", env = "JWT_ISSUER", value_name = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(
        long = "jwt-audience",
        env = "JWT_AUDIENCE",
        value_name = "JWT_AUDIENCE"
    )]
    pub jwt_audience: Option<String>,
    /// Clock leeway for `exp`/`nbf`, in seconds (at most 60).
    #[arg(
        long = "jwt-leeway",
        env = "JWT_LEEWAY",
        value_name = "JWT_LEEWAY",
        default_value_t = 5
    )]
    pub jwt_leeway: u64,

    /// Key for the backend HTTP API (`Authorization: Bearer <key>`). Unset: /v1 refuses every call.
    #[arg(
        long = "admin-api-key",
        env = "ADMIN_API_KEY",
        value_name = "ADMIN_API_KEY",
        hide_env_values = true
    )]
    pub admin_api_key: Option<String>,

    /// Interval between client pings announced to clients, in ms.
    #[arg(
        long = "ws-heartbeat-interval",
        env = "WS_HEARTBEAT_INTERVAL",
        value_name = "WS_HEARTBEAT_INTERVAL",
        default_value_t = 30_000
    )]
    pub ws_heartbeat_interval: u64,
    /// A connection that sends nothing for this long (ms) is closed with 4000.
    #[arg(
        long = "ws-connection-timeout",
        env = "WS_CONNECTION_TIMEOUT",
        value_name = "WS_CONNECTION_TIMEOUT",
        default_value_t = 60_000
    )]
    pub ws_connection_timeout: u64,
    /// Live connections per (app, user) across all nodes.
    #[arg(
        long = "ws-max-connections-per-user",
        env = "WS_MAX_CONNECTIONS_PER_USER",
        value_name = "WS_MAX_CONNECTIONS_PER_USER",
        default_value_t = 3
    )]
    pub ws_max_connections_per_user: u32,
    /// Largest frame accepted from a client, in bytes (larger: close 1009).
    #[arg(
        long = "ws-max-message-bytes",
        env = "WS_MAX_MESSAGE_BYTES",
        value_name = "WS_MAX_MESSAGE_BYTES",
        default_value_t = 65_536
    )]
    pub ws_max_message_bytes: usize,
    /// Rooms one connection may be in.
    #[arg(
        long = "ws-max-rooms-per-connection",
        env = "WS_MAX_ROOMS_PER_CONNECTION",
        value_name = "WS_MAX_ROOMS_PER_CONNECTION",
        default_value_t = 100
    )]
    pub ws_max_rooms_per_connection: u32,
    /// How long inbox messages are kept, in seconds.
    #[arg(
        long = "ws-message-ttl",
        env = "WS_MESSAGE_TTL",
        value_name = "WS_MESSAGE_TTL",
        default_value_t = 604_800
    )]
    pub ws_message_ttl: u64,
    /// Inbox messages kept per (app, user); the oldest go first.
    #[arg(
        long = "ws-max-queue-per-user",
        env = "WS_MAX_QUEUE_PER_USER",
        value_name = "WS_MAX_QUEUE_PER_USER",
        default_value_t = 1000
    )]
    pub ws_max_queue_per_user: u32,
    /// How long client message ids are remembered for de-duplication, in seconds.
    #[arg(
        long = "ws-dedup-ttl",
        env = "WS_DEDUP_TTL",
        value_name = "WS_DEDUP_TTL",
        default_value_t = 604_800
    )]
    pub ws_dedup_ttl: u64,
    /// How long the answer to a `/v1/send/*` request with an `Idempotency-Key` is kept
    /// for retries of that request, in seconds (60 to 604800).
    #[arg(
        long = "api-idempotency-ttl",
        env = "API_IDEMPOTENCY_TTL",
        value_name = "API_IDEMPOTENCY_TTL",
        default_value_t = 3_600
    )]
    pub api_idempotency_ttl: u64,
    /// Comma-separated origins allowed to open a WebSocket (`*` as a wildcard inside one entry).
    /// Unset: any request carrying an Origin header is refused (native apps send none).
    #[arg(
        long = "ws-allowed-origins",
        env = "WS_ALLOWED_ORIGINS",
        value_name = "WS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub ws_allowed_origins: Vec<String>,
    /// Comma-separated room patterns (`orders:*`, `lobby`, `*`) whose members get
    /// `presence_joined` / `presence_left` events when a connection joins or leaves.
    /// Unset: no events (presence is still answered on request).
    #[arg(
        long = "ws-presence-events",
        env = "WS_PRESENCE_EVENTS",
        value_name = "WS_PRESENCE_EVENTS",
        value_delimiter = ','
    )]
    pub ws_presence_events: Vec<String>,
    /// Comma-separated room patterns (`orders:*`, `lobby`, `*`) whose rooms keep a history:
    /// every message gets an offset, and a client that lost its connection recovers what
    /// it missed when it joins again. Unset: rooms are live only.
    #[arg(
        long = "ws-room-history",
        env = "WS_ROOM_HISTORY",
        value_name = "WS_ROOM_HISTORY",
        value_delimiter = ','
    )]
    pub ws_room_history: Vec<String>,
    /// Messages kept per room with history (1 to 10000).
    #[arg(
        long = "ws-room-history-size",
        env = "WS_ROOM_HISTORY_SIZE",
        value_name = "WS_ROOM_HISTORY_SIZE",
        default_value_t = 100
    )]
    pub ws_room_history_size: u64,
    /// Seconds a room's history keeps a message (1 to 604800).
    #[arg(
        long = "ws-room-history-ttl",
        env = "WS_ROOM_HISTORY_TTL",
        value_name = "WS_ROOM_HISTORY_TTL",
        default_value_t = 300
    )]
    pub ws_room_history_ttl: u64,
    /// Broadcasts kept per app (`/v1/send/app`), recovered by clients at connect
    /// (0 to 10000; 0: app broadcasts are live only).
    #[arg(
        long = "ws-app-history-size",
        env = "WS_APP_HISTORY_SIZE",
        value_name = "WS_APP_HISTORY_SIZE",
        default_value_t = 0
    )]
    pub ws_app_history_size: u64,
    /// Seconds an app's history keeps a broadcast (1 to 604800).
    #[arg(
        long = "ws-app-history-ttl",
        env = "WS_APP_HISTORY_TTL",
        value_name = "WS_APP_HISTORY_TTL",
        default_value_t = 300
    )]
    pub ws_app_history_ttl: u64,
    /// Frames waiting for one client before it counts as too slow and is closed with 4008.
    #[arg(
        long = "ws-outbound-queue",
        env = "WS_OUTBOUND_QUEUE",
        value_name = "WS_OUTBOUND_QUEUE",
        default_value_t = 1024
    )]
    pub ws_outbound_queue: usize,
    /// Frames per second one connection may send (burst: twice as many); 0 turns the limit off.
    #[arg(
        long = "ws-rate-limit",
        env = "WS_RATE_LIMIT",
        value_name = "WS_RATE_LIMIT",
        default_value_t = 100
    )]
    pub ws_rate_limit: u32,
    /// WebSocket handshakes per second from one IP address (429 beyond); 0 turns the limit off.
    /// Off by default: mobile carriers put many phones behind one address.
    #[arg(
        long = "ws-handshake-rate-per-ip",
        env = "WS_HANDSHAKE_RATE_PER_IP",
        value_name = "WS_HANDSHAKE_RATE_PER_IP",
        default_value_t = 0
    )]
    pub ws_handshake_rate_per_ip: u32,
    /// App messages kept per app for `GET /v1/inbound` (embedded broker) or in the
    /// `tether:inbound:<app>` stream (Redis, approximate trimming).
    #[arg(
        long = "ws-inbound-max-per-app",
        env = "WS_INBOUND_MAX_PER_APP",
        value_name = "WS_INBOUND_MAX_PER_APP",
        default_value_t = 100_000
    )]
    pub ws_inbound_max_per_app: u64,
    /// How long a client may take to send its HTTP request head, in ms (slowloris
    /// protection: a client that trickles its handshake is dropped).
    #[arg(
        long = "ws-handshake-timeout",
        env = "WS_HANDSHAKE_TIMEOUT",
        value_name = "WS_HANDSHAKE_TIMEOUT",
        default_value_t = 10_000
    )]
    pub ws_handshake_timeout: u64,
    /// Frames per second all of one user's connections on this node may send together
    /// (burst: twice as many); 0 turns the limit off.
    #[arg(
        long = "ws-rate-limit-per-user",
        env = "WS_RATE_LIMIT_PER_USER",
        value_name = "WS_RATE_LIMIT_PER_USER",
        default_value_t = 200
    )]
    pub ws_rate_limit_per_user: u32,
    /// How long graceful shutdown waits for connections to close, in ms.
    #[arg(
        long = "shutdown-timeout",
        env = "SHUTDOWN_TIMEOUT",
        value_name = "SHUTDOWN_TIMEOUT",
        default_value_t = 10_000
    )]
    pub shutdown_timeout: u64,

    /// Log format: pretty or json.
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        default_value = "pretty",
        ignore_case = true
    )]
    pub log_format: LogFormat,

    /// Development mode: without JWT_SECRET / ADMIN_API_KEY, make random ones and print a
    /// ready token, an admin key and example commands.
    #[arg(long = "dev")]
    pub dev: bool,
}

/// A secret string whose `Debug` output is redacted, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where Redis is, when configured.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` URLs: one for a single Redis, the seed nodes for a cluster.
    pub urls: Vec<String>,
    /// Redis Cluster mode.
    pub cluster: bool,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// A URL with any password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Redis behind Sentinel, when configured.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// Sentinel addresses (host, port).
    pub sentinels: Vec<(String, u16)>,
    /// The monitored master's name.
    pub master_name: String,
    /// The sentinels' password.
    pub sentinel_password: Option<Secret>,
    /// The master's (and replicas') password.
    pub password: Option<Secret>,
    /// Database number.
    pub db: u32,
    /// Replicas that confirm a durable write (0: none).
    pub sync_replicas: u32,
    /// Time between two routine checks of which server is the master.
    pub check_interval: Duration,
}

impl std::fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelConfig")
            .field(
                "sentinels",
                &self
                    .sentinels
                    .iter()
                    .map(|(host, port)| format!("{host}:{port}"))
                    .collect::<Vec<_>>(),
            )
            .field("master_name", &self.master_name)
            .field("sentinel_password", &self.sentinel_password)
            .field("password", &self.password)
            .field("db", &self.db)
            .field("sync_replicas", &self.sync_replicas)
            .field("check_interval", &self.check_interval)
            .finish()
    }
}

/// The Sentinel client's target, from the gateway's settings (the broker does not read
/// the configuration).
impl From<&SentinelConfig> for SentinelTarget {
    fn from(config: &SentinelConfig) -> SentinelTarget {
        SentinelTarget {
            sentinels: config.sentinels.clone(),
            master_name: config.master_name.clone(),
            sentinel_password: config.sentinel_password.as_ref().map(|s| s.0.clone()),
            password: config.password.as_ref().map(|s| s.0.clone()),
            db: i64::from(config.db),
            sync_replicas: config.sync_replicas,
            check_interval: config.check_interval,
        }
    }
}

/// Which broker the gateway runs on: the one place that choice is made.
#[derive(Debug, Clone)]
pub enum BrokerConfig {
    /// The embedded single-node broker (no Redis configured).
    Memory,
    /// One Redis, or a Redis Cluster ([`RedisConfig::cluster`]).
    Redis(RedisConfig),
    /// The master of a Sentinel-managed set.
    Sentinel(SentinelConfig),
}

impl BrokerConfig {
    /// The Redis settings, when the broker is a Redis or a Cluster.
    pub fn redis(&self) -> Option<&RedisConfig> {
        match self {
            BrokerConfig::Redis(redis) => Some(redis),
            _ => None,
        }
    }

    /// The Sentinel settings, when the broker is behind Sentinel.
    pub fn sentinel(&self) -> Option<&SentinelConfig> {
        match self {
            BrokerConfig::Sentinel(sentinel) => Some(sentinel),
            _ => None,
        }
    }
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address (port 0 picks a free port).
    pub bind: SocketAddr,
    /// The broker: embedded, Redis (one or a Cluster), or Redis behind Sentinel.
    pub broker: BrokerConfig,
    /// Token checking.
    pub jwt: JwtConfig,
    /// Backend API key.
    pub admin_api_key: Option<Secret>,
    /// Announced ping interval, ms.
    pub heartbeat_interval_ms: u64,
    /// Idle timeout, ms.
    pub connection_timeout_ms: u64,
    /// Connections per (app, user).
    pub max_connections_per_user: u32,
    /// Frame size limit, bytes.
    pub max_message_bytes: usize,
    /// Rooms per connection.
    pub max_rooms_per_connection: u32,
    /// Inbox retention, seconds.
    pub message_ttl_s: u64,
    /// Inbox length per (app, user).
    pub max_queue_per_user: u32,
    /// Dedup window for client message ids, seconds.
    pub dedup_ttl_s: u64,
    /// How long `Idempotency-Key` answers of the backend API are kept, seconds.
    pub idempotency_ttl_s: u64,
    /// Allowed `Origin` values (empty: refuse any request with an Origin).
    pub allowed_origins: Vec<String>,
    /// Room patterns whose members get join and leave events (empty: none).
    pub presence_events: Vec<String>,
    /// Room patterns whose rooms keep a history (streams).
    pub room_history: Vec<String>,
    /// Messages kept per room stream.
    pub room_history_size: u64,
    /// Seconds a room stream keeps a message.
    pub room_history_ttl_s: u64,
    /// Broadcasts kept per app stream (0: none).
    pub app_history_size: u64,
    /// Seconds an app stream keeps a broadcast.
    pub app_history_ttl_s: u64,
    /// Outbound frames queued per connection before it is closed as too slow.
    pub outbound_queue: usize,
    /// Frames per second per connection (0: unlimited).
    pub rate_limit_per_connection: u32,
    /// Handshakes per second per IP (0: unlimited).
    pub handshake_rate_per_ip: u32,
    /// App messages kept per app.
    pub inbound_max_per_app: u64,
    /// How long graceful shutdown waits for sockets to close.
    pub shutdown_timeout: Duration,
    /// Registry entry lifetime without refresh.
    pub registry_ttl: Duration,
    /// Deadline for the HTTP request head.
    pub handshake_timeout: Duration,
    /// Frames per second per user on this node (0: unlimited).
    pub rate_limit_per_user: u32,
    /// Log format.
    pub log_format: LogFormat,
}

/// A configuration value that stops start-up.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A variable has a value outside its rule.
    #[error("{variable}: {message}")]
    Invalid {
        /// The environment variable (and flag) at fault.
        variable: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },
}

fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        message: message.into(),
    }
}

impl Config {
    /// Validates the command line / environment. `dev_secret` is the random secret that
    /// `--dev` made when `JWT_SECRET` is unset.
    pub fn from_cli(cli: &Cli, dev_secret: Option<&str>) -> Result<Config, ConfigError> {
        let broker = match sentinel_config(cli)? {
            Some(sentinel) => BrokerConfig::Sentinel(sentinel),
            None => redis_config(cli)?.map_or(BrokerConfig::Memory, BrokerConfig::Redis),
        };
        let jwt = jwt_config(cli, dev_secret)?;
        if let Some(key) = &cli.admin_api_key {
            if key.len() < 16 {
                return Err(invalid("ADMIN_API_KEY", "must be at least 16 characters"));
            }
        }
        if cli.ws_heartbeat_interval < 1000 {
            return Err(invalid("WS_HEARTBEAT_INTERVAL", "must be at least 1000 ms"));
        }
        if cli.ws_connection_timeout <= cli.ws_heartbeat_interval {
            return Err(invalid(
                "WS_CONNECTION_TIMEOUT",
                format!(
                    "must be longer than WS_HEARTBEAT_INTERVAL ({} ms), or healthy clients are cut off; twice the interval is usual",
                    cli.ws_heartbeat_interval
                ),
            ));
        }
        if cli.ws_max_connections_per_user == 0 {
            return Err(invalid("WS_MAX_CONNECTIONS_PER_USER", "must be at least 1"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&cli.ws_max_message_bytes) {
            return Err(invalid(
                "WS_MAX_MESSAGE_BYTES",
                "must be between 1024 and 16777216",
            ));
        }
        if cli.ws_max_rooms_per_connection == 0 {
            return Err(invalid("WS_MAX_ROOMS_PER_CONNECTION", "must be at least 1"));
        }
        if cli.ws_message_ttl == 0 {
            return Err(invalid("WS_MESSAGE_TTL", "must be at least 1 second"));
        }
        if cli.ws_max_queue_per_user == 0 {
            return Err(invalid("WS_MAX_QUEUE_PER_USER", "must be at least 1"));
        }
        if cli.ws_dedup_ttl == 0 {
            return Err(invalid("WS_DEDUP_TTL", "must be at least 1 second"));
        }
        if !(MIN_TTL_S..=MAX_TTL_S).contains(&cli.api_idempotency_ttl) {
            return Err(invalid(
                "API_IDEMPOTENCY_TTL",
                format!(
                    "must be {MIN_TTL_S} to {MAX_TTL_S} seconds (above the 30 s after which \
                     a running send's claim counts as dead; at most 7 days)"
                ),
            ));
        }
        if cli.ws_outbound_queue < 8 {
            return Err(invalid("WS_OUTBOUND_QUEUE", "must be at least 8"));
        }
        if !(100..=120_000).contains(&cli.ws_handshake_timeout) {
            return Err(invalid(
                "WS_HANDSHAKE_TIMEOUT",
                "must be between 100 and 120000 ms",
            ));
        }
        if cli.ws_registry_ttl < 3 {
            return Err(invalid("WS_REGISTRY_TTL", "must be at least 3 seconds"));
        }
        if cli.ws_inbound_max_per_app == 0 {
            return Err(invalid("WS_INBOUND_MAX_PER_APP", "must be at least 1"));
        }
        for origin in &cli.ws_allowed_origins {
            if origin.trim().is_empty() || origin.matches('*').count() > 1 {
                return Err(invalid(
                    "WS_ALLOWED_ORIGINS",
                    format!("{origin:?} is not an origin (https://app.example.com, at most one *)"),
                ));
            }
        }
        let presence_events = room_patterns("WS_PRESENCE_EVENTS", &cli.ws_presence_events)?;
        let room_history = room_patterns("WS_ROOM_HISTORY", &cli.ws_room_history)?;
        if !(1..=MAX_HISTORY_SIZE).contains(&cli.ws_room_history_size) {
            return Err(invalid(
                "WS_ROOM_HISTORY_SIZE",
                format!("must be between 1 and {MAX_HISTORY_SIZE} messages"),
            ));
        }
        if cli.ws_app_history_size > MAX_HISTORY_SIZE {
            return Err(invalid(
                "WS_APP_HISTORY_SIZE",
                format!("must be between 0 and {MAX_HISTORY_SIZE} messages"),
            ));
        }
        for (name, ttl) in [
            ("WS_ROOM_HISTORY_TTL", cli.ws_room_history_ttl),
            ("WS_APP_HISTORY_TTL", cli.ws_app_history_ttl),
        ] {
            if !(1..=604_800).contains(&ttl) {
                return Err(invalid(name, "must be between 1 and 604800 seconds"));
            }
        }
        Ok(Config {
            bind: cli.bind,
            broker,
            jwt,
            admin_api_key: cli.admin_api_key.clone().map(Secret),
            heartbeat_interval_ms: cli.ws_heartbeat_interval,
            connection_timeout_ms: cli.ws_connection_timeout,
            max_connections_per_user: cli.ws_max_connections_per_user,
            max_message_bytes: cli.ws_max_message_bytes,
            max_rooms_per_connection: cli.ws_max_rooms_per_connection,
            message_ttl_s: cli.ws_message_ttl,
            max_queue_per_user: cli.ws_max_queue_per_user,
            dedup_ttl_s: cli.ws_dedup_ttl,
            idempotency_ttl_s: cli.api_idempotency_ttl,
            allowed_origins: cli
                .ws_allowed_origins
                .iter()
                .map(|o| o.trim().to_owned())
                .collect(),
            presence_events,
            room_history,
            room_history_size: cli.ws_room_history_size,
            room_history_ttl_s: cli.ws_room_history_ttl,
            app_history_size: cli.ws_app_history_size,
            app_history_ttl_s: cli.ws_app_history_ttl,
            outbound_queue: cli.ws_outbound_queue,
            rate_limit_per_connection: cli.ws_rate_limit,
            handshake_rate_per_ip: cli.ws_handshake_rate_per_ip,
            inbound_max_per_app: cli.ws_inbound_max_per_app,
            shutdown_timeout: Duration::from_millis(cli.shutdown_timeout),
            registry_ttl: Duration::from_secs(cli.ws_registry_ttl),
            handshake_timeout: Duration::from_millis(cli.ws_handshake_timeout),
            rate_limit_per_user: cli.ws_rate_limit_per_user,
            log_format: cli.log_format,
        })
    }

    /// A configuration for tests and embedding: 127.0.0.1 on a free port, the embedded
    /// broker, HS256 with `jwt_secret`, admin key `test-admin-key`, protocol defaults.
    pub fn for_tests(jwt_secret: &str) -> Config {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            broker: BrokerConfig::Memory,
            jwt: JwtConfig {
                key: JwtKey::Secret(jwt_secret.as_bytes().to_vec()),
                issuer: None,
                audience: None,
                leeway_s: 5,
            },
            admin_api_key: Some(Secret("test-admin-key".to_owned())),
            heartbeat_interval_ms: 30_000,
            connection_timeout_ms: 60_000,
            max_connections_per_user: 3,
            max_message_bytes: 65_536,
            max_rooms_per_connection: 100,
            message_ttl_s: 604_800,
            max_queue_per_user: 1000,
            dedup_ttl_s: 604_800,
            idempotency_ttl_s: 3_600,
            allowed_origins: Vec::new(),
            presence_events: Vec::new(),
            room_history: Vec::new(),
            room_history_size: 100,
            room_history_ttl_s: 300,
            app_history_size: 0,
            app_history_ttl_s: 300,
            outbound_queue: 1024,
            rate_limit_per_connection: 100,
            handshake_rate_per_ip: 0,
            inbound_max_per_app: 100_000,
            shutdown_timeout: Duration::from_secs(5),
            registry_ttl: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            rate_limit_per_user: 200,
            log_format: LogFormat::Pretty,
        }
    }
}

/// Most messages a stream's history may keep (`WS_ROOM_HISTORY_SIZE`, `WS_APP_HISTORY_SIZE`).
pub const MAX_HISTORY_SIZE: u64 = 10_000;

impl Config {
    /// What the stream `name` of an app keeps, or `None` when it is live only.
    pub fn history_of(&self, name: &StreamName) -> Option<HistoryLimits> {
        crate::broker::stream::limits_for(
            &self.room_history,
            Some(self.room_limits()),
            self.app_limits(),
            name,
        )
    }

    /// The stream settings, for a `Publisher` working beside gateways with this configuration.
    pub fn stream_settings(&self) -> StreamSettings {
        StreamSettings {
            rooms: self.room_history.clone(),
            room: Some(self.room_limits()),
            app: self.app_limits(),
        }
    }

    fn room_limits(&self) -> HistoryLimits {
        HistoryLimits {
            size: self.room_history_size,
            ttl_ms: self.room_history_ttl_s.saturating_mul(1000),
        }
    }

    fn app_limits(&self) -> Option<HistoryLimits> {
        (self.app_history_size > 0).then_some(HistoryLimits {
            size: self.app_history_size,
            ttl_ms: self.app_history_ttl_s.saturating_mul(1000),
        })
    }
}

/// Room patterns of a setting (`orders:*`, `lobby`, `*`); empty entries (`X=`, a trailing
/// comma) are ignored.
fn room_patterns(variable: &'static str, entries: &[String]) -> Result<Vec<String>, ConfigError> {
    let patterns: Vec<String> = entries
        .iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    for pattern in &patterns {
        let name = pattern.strip_suffix('*').unwrap_or(pattern);
        if (!name.is_empty() && tether_protocol::names::validate_room(name).is_err())
            || name.contains('*')
        {
            return Err(invalid(
                variable,
                format!("{pattern:?} is not a room pattern (a room name, optionally ending in *)"),
            ));
        }
    }
    Ok(patterns)
}

fn redis_config(cli: &Cli) -> Result<Option<RedisConfig>, ConfigError> {
    if let Some(list) = &cli.redis_url {
        let urls: Vec<String> = list
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(invalid(
                "REDIS_URL",
                "is empty; unset it for the embedded broker",
            ));
        }
        for url in &urls {
            let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|s| url.starts_with(s));
            if !scheme_ok {
                return Err(invalid(
                    "REDIS_URL",
                    format!("{} is not a redis:// or rediss:// URL", redact_url(url)),
                ));
            }
        }
        let cluster = cli.redis_cluster || urls.len() > 1;
        return Ok(Some(RedisConfig { urls, cluster }));
    }
    let any_part = cli.redis_host.is_some()
        || cli.redis_port.is_some()
        || cli.redis_password.is_some()
        || cli.redis_db.is_some();
    if !any_part {
        return Ok(None);
    }
    let host = cli
        .redis_host
        .clone()
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(invalid(
            "REDIS_HOST",
            format!("{host:?} is not a host name"),
        ));
    }
    let port = cli.redis_port.unwrap_or(6379);
    let db = cli.redis_db.unwrap_or(0);
    let auth = match &cli.redis_password {
        Some(password) => format!(":{}@", percent_encode(password)),
        None => String::new(),
    };
    Ok(Some(RedisConfig {
        urls: vec![format!("redis://{auth}{host}:{port}/{db}")],
        cluster: cli.redis_cluster,
    }))
}

fn sentinel_config(cli: &Cli) -> Result<Option<SentinelConfig>, ConfigError> {
    let Some(list) = &cli.redis_sentinels else {
        for (variable, set) in [
            ("REDIS_SENTINEL_MASTER", cli.redis_sentinel_master.is_some()),
            (
                "REDIS_SENTINEL_PASSWORD",
                cli.redis_sentinel_password.is_some(),
            ),
        ] {
            if set {
                return Err(invalid(
                    variable,
                    "is set but REDIS_SENTINELS is not; give the sentinel addresses or unset it",
                ));
            }
        }
        return Ok(None);
    };
    for (variable, set) in [
        ("REDIS_URL", cli.redis_url.is_some()),
        ("REDIS_HOST", cli.redis_host.is_some()),
        ("REDIS_PORT", cli.redis_port.is_some()),
        ("REDIS_CLUSTER", cli.redis_cluster),
    ] {
        if set {
            return Err(invalid(
                "REDIS_SENTINELS",
                format!(
                    "cannot be used together with {variable}: the sentinels name the master; unset one of them"
                ),
            ));
        }
    }
    let mut sentinels = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry.rsplit_once(':').and_then(|(host, port)| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let valid_host = !host.is_empty() && !host.contains(['/', '@', ' ']);
            let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
            valid_host.then(|| (host.to_owned(), port))
        });
        match parsed {
            Some(address) => sentinels.push(address),
            None => {
                return Err(invalid(
                    "REDIS_SENTINELS",
                    format!("{entry:?} is not host:port (comma-separated, e.g. s1:26379,s2:26379)"),
                ))
            }
        }
    }
    if sentinels.is_empty() {
        return Err(invalid(
            "REDIS_SENTINELS",
            "lists no sentinel; give host:port entries, comma-separated",
        ));
    }
    let master_name = match cli.redis_sentinel_master.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() && !name.contains(char::is_whitespace) => name.to_owned(),
        Some(name) => {
            return Err(invalid(
                "REDIS_SENTINEL_MASTER",
                format!("{name:?} is not a master name"),
            ))
        }
        None => {
            return Err(invalid(
                "REDIS_SENTINEL_MASTER",
                "is required with REDIS_SENTINELS: the name in `sentinel monitor <name> ...`",
            ))
        }
    };
    if cli.redis_sentinel_password.as_deref() == Some("") {
        return Err(invalid(
            "REDIS_SENTINEL_PASSWORD",
            "is empty; unset it or give the password",
        ));
    }
    if cli.redis_sentinel_sync_replicas > 16 {
        return Err(invalid(
            "REDIS_SENTINEL_SYNC_REPLICAS",
            format!(
                "{} is above the 16 maximum (usually 1: one replica confirms each stored message)",
                cli.redis_sentinel_sync_replicas
            ),
        ));
    }
    let bounds = crate::broker::redis::sentinel::CHECK_INTERVAL_MS;
    if !bounds.contains(&cli.redis_sentinel_check_interval) {
        return Err(invalid(
            "REDIS_SENTINEL_CHECK_INTERVAL",
            format!(
                "{} ms is outside {}-{} (milliseconds between checks of the master; 1000 by default)",
                cli.redis_sentinel_check_interval,
                bounds.start(),
                bounds.end()
            ),
        ));
    }
    Ok(Some(SentinelConfig {
        sentinels,
        master_name,
        sentinel_password: cli.redis_sentinel_password.clone().map(Secret),
        password: cli.redis_password.clone().map(Secret),
        db: cli.redis_db.unwrap_or(0),
        sync_replicas: cli.redis_sentinel_sync_replicas,
        check_interval: Duration::from_millis(cli.redis_sentinel_check_interval),
    }))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn jwt_config(cli: &Cli, dev_secret: Option<&str>) -> Result<JwtConfig, ConfigError> {
    if cli.jwt_leeway > 60 {
        return Err(invalid(
            "JWT_LEEWAY",
            format!("{} s is above the 60 s maximum", cli.jwt_leeway),
        ));
    }
    let algorithm = cli
        .jwt_algorithm
        .unwrap_or(if cli.jwt_public_key_file.is_some() {
            JwtAlgorithm::Rs256
        } else {
            JwtAlgorithm::Hs256
        });
    let key = match algorithm {
        JwtAlgorithm::Hs256 => {
            if cli.jwt_public_key_file.is_some() {
                return Err(invalid(
                    "JWT_ALGORITHM",
                    "HS256 uses JWT_SECRET; set JWT_ALGORITHM=RS256 or ES256 to use JWT_PUBLIC_KEY_FILE",
                ));
            }
            let secret = match (&cli.jwt_secret, dev_secret) {
                (Some(secret), _) => secret.clone(),
                (None, Some(dev)) => dev.to_owned(),
                (None, None) => {
                    return Err(invalid(
                        "JWT_SECRET",
                        "is not set; set it (at least 32 characters) or start with --dev for a random one",
                    ))
                }
            };
            if secret.len() < 32 {
                return Err(invalid(
                    "JWT_SECRET",
                    "must be at least 32 characters (256 bits) for HS256",
                ));
            }
            JwtKey::Secret(secret.into_bytes())
        }
        JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
            let Some(path) = &cli.jwt_public_key_file else {
                return Err(invalid(
                    "JWT_PUBLIC_KEY_FILE",
                    format!("is required for {algorithm:?}"),
                ));
            };
            let pem = std::fs::read(path).map_err(|e| {
                invalid(
                    "JWT_PUBLIC_KEY_FILE",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let parsed = match algorithm {
                JwtAlgorithm::Rs256 => jsonwebtoken::DecodingKey::from_rsa_pem(&pem).map(|_| ()),
                _ => jsonwebtoken::DecodingKey::from_ec_pem(&pem).map(|_| ()),
            };
            parsed.map_err(|e| {
                invalid(
                    "JWT_PUBLIC_KEY_FILE",
                    format!(
                        "{} is not a {algorithm:?} public key in PEM: {e}",
                        path.display()
                    ),
                )
            })?;
            if algorithm == JwtAlgorithm::Rs256 {
                let bits = crate::auth::rsa_key_bits(&pem);
                if !bits.is_some_and(|bits| crate::auth::RSA_BITS.contains(&bits)) {
                    return Err(invalid(
                        "JWT_PUBLIC_KEY_FILE",
                        format!(
                            "{}: RS256 keys must have {} to {} bits; this one has {}",
                            path.display(),
                            crate::auth::RSA_BITS.start(),
                            crate::auth::RSA_BITS.end(),
                            bits.map_or("an unreadable size".to_owned(), |b| b.to_string())
                        ),
                    ));
                }
            }
            JwtKey::PublicKeyPem { algorithm, pem }
        }
    };
    for (variable, value) in [
        ("JWT_ISSUER", &cli.jwt_issuer),
        ("JWT_AUDIENCE", &cli.jwt_audience),
    ] {
        if value.as_deref() == Some("") {
            return Err(invalid(variable, "is empty; unset it or give a value"));
        }
    }
    Ok(JwtConfig {
        key,
        issuer: cli.jwt_issuer.clone(),
        audience: cli.jwt_audience.clone(),
        leeway_s: cli.jwt_leeway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["tether-server"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        Config::from_cli(&cli, None).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_protocol_table() {
        let config = parse(&["--jwt-secret", SECRET]).unwrap();
        assert_eq!(config.bind, "127.0.0.1:8080".parse().unwrap());
        assert!(config.broker.redis().is_none());
        assert_eq!(config.heartbeat_interval_ms, 30_000);
        assert_eq!(config.connection_timeout_ms, 60_000);
        assert_eq!(config.max_connections_per_user, 3);
        assert_eq!(config.max_message_bytes, 65_536);
        assert_eq!(config.max_rooms_per_connection, 100);
        assert_eq!(config.message_ttl_s, 604_800);
        assert_eq!(config.max_queue_per_user, 1000);
        assert_eq!(config.dedup_ttl_s, 604_800);
        assert_eq!(config.idempotency_ttl_s, 3_600);
        assert_eq!(config.jwt.leeway_s, 5);
        assert!(
            matches!(config.jwt.key, JwtKey::Secret(_)),
            "HS256 by default"
        );
        assert!(config.admin_api_key.is_none());
        assert!(config.allowed_origins.is_empty());
        assert!(config.presence_events.is_empty());
        assert!(config.room_history.is_empty());
        assert_eq!(config.room_history_size, 100);
        assert_eq!(config.room_history_ttl_s, 300);
        assert_eq!(config.app_history_size, 0);
        assert_eq!(config.app_history_ttl_s, 300);
        assert_eq!(config.outbound_queue, 1024);
        assert_eq!(config.rate_limit_per_connection, 100);
        assert_eq!(config.handshake_rate_per_ip, 0);
        assert_eq!(config.rate_limit_per_user, 200);
        assert_eq!(config.handshake_timeout, Duration::from_millis(10_000));
        assert_eq!(config.inbound_max_per_app, 100_000);
        assert_eq!(config.registry_ttl, Duration::from_secs(300));
        assert_eq!(config.shutdown_timeout, Duration::from_millis(10_000));
        assert_eq!(config.log_format, LogFormat::Pretty);
        let parts = parse(&["--jwt-secret", SECRET, "--redis-password", "p"]).unwrap();
        assert_eq!(
            parts.broker.redis().unwrap().urls,
            ["redis://:p@127.0.0.1:6379/0"],
            "REDIS_HOST 127.0.0.1, REDIS_PORT 6379, REDIS_DB 0"
        );
        let sentinel = parse(&[
            "--jwt-secret",
            SECRET,
            "--redis-sentinels",
            "s1:26379",
            "--redis-sentinel-master",
            "m",
        ])
        .unwrap()
        .broker
        .sentinel()
        .cloned()
        .unwrap();
        assert_eq!(sentinel.sync_replicas, 1);
        assert_eq!(sentinel.check_interval, Duration::from_millis(1000));
    }

    /// Every bound README's configuration table and docs/protocol.md §10 state, at its
    /// edge: the value just inside is accepted, the one just outside stops start-up with
    /// an error naming the variable (ours start `VARIABLE:`; clap's, for a value the type
    /// cannot hold, name the flag's `<VARIABLE>`).
    #[test]
    fn every_documented_bound_is_enforced_at_its_edge() {
        let sentinels = [
            "--redis-sentinels",
            "s1:26379",
            "--redis-sentinel-master",
            "m",
        ];
        let room_128 = "r".repeat(128);
        let room_129 = "r".repeat(129);
        let pattern_129 = format!("{room_128}*");
        let secret_31 = &SECRET[..31];
        let key_16 = "0123456789abcdef";
        let key_15 = &key_16[..15];
        let u32_max = u32::MAX.to_string();
        let u32_over = (u64::from(u32::MAX) + 1).to_string();
        // (variable, flag, just inside, just outside, extra arguments)
        #[rustfmt::skip]
        let edges: Vec<(&str, &str, &str, &str, &[&str])> = vec![
            ("JWT_SECRET", "--jwt-secret", SECRET, secret_31, &[]),
            ("JWT_LEEWAY", "--jwt-leeway", "60", "61", &[]),
            ("JWT_LEEWAY", "--jwt-leeway", "0", "-1", &[]),
            ("ADMIN_API_KEY", "--admin-api-key", key_16, key_15, &[]),
            ("WS_HEARTBEAT_INTERVAL", "--ws-heartbeat-interval", "1000", "999", &[]),
            // Longer than the interval (default 30000).
            ("WS_CONNECTION_TIMEOUT", "--ws-connection-timeout", "30001", "30000", &[]),
            ("WS_MAX_CONNECTIONS_PER_USER", "--ws-max-connections-per-user", "1", "0", &[]),
            ("WS_MAX_CONNECTIONS_PER_USER", "--ws-max-connections-per-user", &u32_max, &u32_over, &[]),
            ("WS_MAX_MESSAGE_BYTES", "--ws-max-message-bytes", "1024", "1023", &[]),
            ("WS_MAX_MESSAGE_BYTES", "--ws-max-message-bytes", "16777216", "16777217", &[]),
            ("WS_MAX_ROOMS_PER_CONNECTION", "--ws-max-rooms-per-connection", "1", "0", &[]),
            ("WS_MAX_ROOMS_PER_CONNECTION", "--ws-max-rooms-per-connection", &u32_max, &u32_over, &[]),
            ("WS_MESSAGE_TTL", "--ws-message-ttl", "1", "0", &[]),
            ("WS_MAX_QUEUE_PER_USER", "--ws-max-queue-per-user", "1", "0", &[]),
            ("WS_MAX_QUEUE_PER_USER", "--ws-max-queue-per-user", &u32_max, &u32_over, &[]),
            ("WS_DEDUP_TTL", "--ws-dedup-ttl", "1", "0", &[]),
            ("API_IDEMPOTENCY_TTL", "--api-idempotency-ttl", "60", "59", &[]),
            ("API_IDEMPOTENCY_TTL", "--api-idempotency-ttl", "604800", "604801", &[]),
            ("WS_OUTBOUND_QUEUE", "--ws-outbound-queue", "8", "7", &[]),
            ("WS_HANDSHAKE_TIMEOUT", "--ws-handshake-timeout", "100", "99", &[]),
            ("WS_HANDSHAKE_TIMEOUT", "--ws-handshake-timeout", "120000", "120001", &[]),
            ("WS_REGISTRY_TTL", "--ws-registry-ttl", "3", "2", &[]),
            ("WS_INBOUND_MAX_PER_APP", "--ws-inbound-max-per-app", "1", "0", &[]),
            ("WS_ROOM_HISTORY_SIZE", "--ws-room-history-size", "1", "0", &[]),
            ("WS_ROOM_HISTORY_SIZE", "--ws-room-history-size", "10000", "10001", &[]),
            ("WS_ROOM_HISTORY_TTL", "--ws-room-history-ttl", "1", "0", &[]),
            ("WS_ROOM_HISTORY_TTL", "--ws-room-history-ttl", "604800", "604801", &[]),
            ("WS_APP_HISTORY_SIZE", "--ws-app-history-size", "0", "-1", &[]),
            ("WS_APP_HISTORY_SIZE", "--ws-app-history-size", "10000", "10001", &[]),
            ("WS_APP_HISTORY_TTL", "--ws-app-history-ttl", "1", "0", &[]),
            ("WS_APP_HISTORY_TTL", "--ws-app-history-ttl", "604800", "604801", &[]),
            // 0 turns these limits off; the largest is the 32-bit maximum.
            ("WS_RATE_LIMIT", "--ws-rate-limit", "0", "-1", &[]),
            ("WS_RATE_LIMIT", "--ws-rate-limit", &u32_max, &u32_over, &[]),
            ("WS_HANDSHAKE_RATE_PER_IP", "--ws-handshake-rate-per-ip", "0", "-1", &[]),
            ("WS_HANDSHAKE_RATE_PER_IP", "--ws-handshake-rate-per-ip", &u32_max, &u32_over, &[]),
            ("WS_RATE_LIMIT_PER_USER", "--ws-rate-limit-per-user", "0", "-1", &[]),
            ("WS_RATE_LIMIT_PER_USER", "--ws-rate-limit-per-user", &u32_max, &u32_over, &[]),
            ("SHUTDOWN_TIMEOUT", "--shutdown-timeout", "0", "-1", &[]),
            ("WS_ALLOWED_ORIGINS", "--ws-allowed-origins", "https://*.a.example", "https://*.*.a.example", &[]),
            ("WS_ALLOWED_ORIGINS", "--ws-allowed-origins", "https://a.example", "https://a.example,", &[]),
            ("WS_PRESENCE_EVENTS", "--ws-presence-events", &pattern_129, &room_129, &[]),
            ("WS_ROOM_HISTORY", "--ws-room-history", &room_128, "a*b", &[]),
            ("TETHER_BIND", "--bind", "0.0.0.0:0", "localhost:8080", &[]),
            ("LOG_FORMAT", "--log-format", "JSON", "text", &[]),
            ("REDIS_URL", "--redis-url", "rediss://cache:6380", "http://cache:6379", &[]),
            ("REDIS_PORT", "--redis-port", "65535", "65536", &[]),
            ("REDIS_SENTINEL_SYNC_REPLICAS", "--redis-sentinel-sync-replicas", "16", "17", &sentinels),
            ("REDIS_SENTINEL_CHECK_INTERVAL", "--redis-sentinel-check-interval", "100", "99", &sentinels),
            ("REDIS_SENTINEL_CHECK_INTERVAL", "--redis-sentinel-check-interval", "60000", "60001", &sentinels),
        ];
        for (variable, flag, inside, outside, extra) in edges {
            let run = |value: &str| {
                let mut args: Vec<&str> = Vec::new();
                if flag != "--jwt-secret" {
                    args.extend(["--jwt-secret", SECRET]);
                }
                args.extend(extra);
                // `--flag=value` keeps a leading `-` a value, not a flag.
                let arg = format!("{flag}={value}");
                args.push(&arg);
                parse(&args)
            };
            if let Err(err) = run(inside) {
                panic!("{variable}={inside:?} is inside the documented range but refused: {err}");
            }
            match run(outside) {
                Ok(_) => {
                    panic!("{variable}={outside:?} is outside the documented range but accepted")
                }
                Err(err) => assert!(
                    err.starts_with(&format!("{variable}:"))
                        || err.contains(&format!("<{variable}>")),
                    "{variable}={outside:?}: the error does not name the variable: {err}"
                ),
            }
        }
    }

    #[test]
    fn a_missing_secret_names_the_variable() {
        let err = parse(&[]).unwrap_err();
        assert!(err.starts_with("JWT_SECRET: is not set"), "{err}");
        let err = parse(&["--jwt-secret", "short"]).unwrap_err();
        assert!(err.starts_with("JWT_SECRET:"), "{err}");
    }

    #[test]
    fn a_bad_number_names_the_variable() {
        let err = parse(&["--jwt-secret", SECRET, "--ws-heartbeat-interval", "soon"]).unwrap_err();
        assert!(err.contains("WS_HEARTBEAT_INTERVAL"), "{err}");
        let err = parse(&["--jwt-secret", SECRET, "--jwt-leeway", "61"]).unwrap_err();
        assert!(err.starts_with("JWT_LEEWAY:"), "{err}");
        let err = parse(&["--jwt-secret", SECRET, "--ws-connection-timeout", "1000"]).unwrap_err();
        assert!(err.starts_with("WS_CONNECTION_TIMEOUT:"), "{err}");
        let err = parse(&["--jwt-secret", SECRET, "--log-format", "xml"]).unwrap_err();
        assert!(err.contains("LOG_FORMAT"), "{err}");
        for ttl in ["0", "59", "604801"] {
            let err = parse(&["--jwt-secret", SECRET, "--api-idempotency-ttl", ttl]).unwrap_err();
            assert!(err.starts_with("API_IDEMPOTENCY_TTL:"), "{err}");
        }
    }

    #[test]
    fn redis_parts_make_a_url_and_the_password_is_redacted() {
        let config = parse(&[
            "--jwt-secret",
            SECRET,
            "--redis-host",
            "cache",
            "--redis-port",
            "6380",
            "--redis-password",
            "p@ss word",
            "--redis-db",
            "2",
        ])
        .unwrap();
        let redis = config.broker.redis().cloned().unwrap();
        assert_eq!(redis.urls, ["redis://:p%40ss%20word@cache:6380/2"]);
        assert!(!redis.cluster);
        assert_eq!(
            format!("{redis:?}"),
            "RedisConfig { urls: [\"redis://:***@cache:6380/2\"], cluster: false }"
        );
        let cluster = parse(&[
            "--jwt-secret",
            SECRET,
            "--redis-url",
            "redis://a:7000, redis://b:7001",
        ])
        .unwrap()
        .broker
        .redis()
        .cloned()
        .unwrap();
        assert!(cluster.cluster);
        assert_eq!(cluster.urls.len(), 2);
        let err = parse(&["--jwt-secret", SECRET, "--redis-url", "http://x"]).unwrap_err();
        assert!(err.starts_with("REDIS_URL:"), "{err}");
    }

    #[test]
    fn sentinel_settings_are_checked_and_exclusive() {
        let config = parse(&[
            "--jwt-secret",
            SECRET,
            "--redis-sentinels",
            "s1:26379, s2:26380",
            "--redis-sentinel-master",
            "mymaster",
            "--redis-sentinel-password",
            "sentinel-pass",
            "--redis-password",
            "data-pass",
            "--redis-db",
            "3",
        ])
        .unwrap();
        assert!(config.broker.redis().is_none());
        let sentinel = config.broker.sentinel().cloned().unwrap();
        assert_eq!(
            sentinel.sentinels,
            [("s1".to_owned(), 26379), ("s2".to_owned(), 26380)]
        );
        assert_eq!(sentinel.master_name, "mymaster");
        assert_eq!(sentinel.db, 3);
        assert_eq!(sentinel.sync_replicas, 1);
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("sentinel-pass") && !shown.contains("data-pass"),
            "{shown}"
        );
        let sentinels = ["--jwt-secret", SECRET, "--redis-sentinels"];
        for (extra, expected) in [
            (vec!["s1:26379"], "REDIS_SENTINEL_MASTER: is required"),
            (
                vec!["s1", "--redis-sentinel-master", "m"],
                "REDIS_SENTINELS: \"s1\"",
            ),
            (
                vec!["s1:0", "--redis-sentinel-master", "m"],
                "REDIS_SENTINELS:",
            ),
            (
                vec![" , ", "--redis-sentinel-master", "m"],
                "REDIS_SENTINELS: lists no",
            ),
            (
                vec![
                    "s1:26379",
                    "--redis-sentinel-master",
                    "m",
                    "--redis-url",
                    "redis://x:6379",
                ],
                "REDIS_SENTINELS: cannot be used together with REDIS_URL",
            ),
            (
                vec![
                    "s1:26379",
                    "--redis-sentinel-master",
                    "m",
                    "--redis-cluster",
                    "true",
                ],
                "REDIS_SENTINELS: cannot be used together with REDIS_CLUSTER",
            ),
            (
                vec![
                    "s1:26379",
                    "--redis-sentinel-master",
                    "m",
                    "--redis-sentinel-sync-replicas",
                    "17",
                ],
                "REDIS_SENTINEL_SYNC_REPLICAS:",
            ),
        ] {
            let mut args = sentinels.to_vec();
            args.extend(extra);
            let err = parse(&args).unwrap_err();
            assert!(err.starts_with(expected), "{err}");
        }
        let err = parse(&["--jwt-secret", SECRET, "--redis-sentinel-master", "m"]).unwrap_err();
        assert!(
            err.starts_with("REDIS_SENTINEL_MASTER: is set but REDIS_SENTINELS is not"),
            "{err}"
        );
    }

    #[test]
    fn origins_are_a_comma_separated_list() {
        let config = parse(&[
            "--jwt-secret",
            SECRET,
            "--ws-allowed-origins",
            "https://a.example,https://*.b.example",
        ])
        .unwrap();
        assert_eq!(
            config.allowed_origins,
            ["https://a.example", "https://*.b.example"]
        );
    }

    #[test]
    fn presence_event_rooms_are_room_patterns() {
        let config = parse(&[
            "--jwt-secret",
            SECRET,
            "--ws-presence-events",
            "lobby, orders:*,*",
        ])
        .unwrap();
        assert_eq!(config.presence_events, ["lobby", "orders:*", "*"]);
        assert!(parse(&["--jwt-secret", SECRET])
            .unwrap()
            .presence_events
            .is_empty());
        let config = parse(&["--jwt-secret", SECRET, "--ws-presence-events", "a,,b,"]).unwrap();
        assert_eq!(
            config.presence_events,
            ["a", "b"],
            "empty entries are ignored"
        );
        for bad in ["a*b*", "no spaces", "*x", "**"] {
            let err = parse(&["--jwt-secret", SECRET, "--ws-presence-events", bad]).unwrap_err();
            assert!(err.starts_with("WS_PRESENCE_EVENTS:"), "{bad}: {err}");
        }
    }

    #[test]
    fn public_key_algorithms_need_a_readable_key() {
        let err = parse(&["--jwt-algorithm", "RS256"]).unwrap_err();
        assert!(err.starts_with("JWT_PUBLIC_KEY_FILE:"), "{err}");
        let err = parse(&[
            "--jwt-algorithm",
            "es256",
            "--jwt-public-key-file",
            "/nonexistent.pem",
        ])
        .unwrap_err();
        assert!(err.starts_with("JWT_PUBLIC_KEY_FILE: cannot read"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = parse(&[
            "--jwt-secret",
            SECRET,
            "--admin-api-key",
            "admin-key-0123456789",
        ])
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("admin-key-0123456789"), "{shown}");
    }
}
