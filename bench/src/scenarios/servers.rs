//! Starting the servers a scenario compares: Tether nodes and the peers, one or more nodes,
//! with Redis between them when there are several.

use crate::client::Dialect;
use crate::procs::{self, GatewayOptions, Proc};
use anyhow::Result;
use std::net::SocketAddr;

/// A server implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This project.
    Tether,
    /// Node + `ws` (+ `ioredis` across nodes).
    NodeWs,
    /// Socket.IO + `@socket.io/redis-adapter`.
    SocketIo,
    /// Bun's uWebSockets-based server (+ ioredis across nodes).
    Bun,
}

impl Kind {
    /// Name in reports.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Tether => "tether",
            Kind::NodeWs => "node ws",
            Kind::SocketIo => "socket.io",
            Kind::Bun => "bun",
        }
    }

    /// How the load generator talks to it.
    pub fn dialect(self) -> Dialect {
        match self {
            Kind::SocketIo => Dialect::SocketIo,
            _ => Dialect::Tether,
        }
    }
}

/// Running servers (and their Redis), killed when dropped.
pub struct Servers {
    /// Nodes and their addresses.
    pub nodes: Vec<(Proc, SocketAddr)>,
    /// Redis, when several nodes share it.
    pub redis: Option<Proc>,
    /// Its URL.
    pub redis_url: Option<String>,
}

impl Servers {
    /// Pids of every server process (Redis included), for CPU accounting.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .map(|(p, _)| p.pid)
            .chain(self.redis.iter().map(|r| r.pid))
            .collect()
    }

    /// Addresses of the nodes.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|(_, a)| *a).collect()
    }
}

/// Starts `nodes` nodes of `kind` on `cpu`; with more than one node (or `force_redis`),
/// a Redis they share.
pub async fn start(
    kind: Kind,
    nodes: usize,
    force_redis: bool,
    env: &[(&str, &str)],
    cpu: &str,
) -> Result<Servers> {
    let mut redis = None;
    let mut redis_url = None;
    if nodes > 1 || force_redis {
        let (proc, port) = procs::start_redis(Some(cpu)).await?;
        redis = Some(proc);
        redis_url = Some(format!("redis://127.0.0.1:{port}/"));
    }
    let mut started = Vec::new();
    for _ in 0..nodes {
        let node = match kind {
            Kind::Tether => {
                let options = GatewayOptions {
                    redis_url: redis_url.clone(),
                    env: env
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    cpu: Some(cpu.to_owned()),
                    port: None,
                };
                procs::start_gateway(&options).await?
            }
            Kind::NodeWs => {
                procs::start_peer("node", "ws-server.mjs", redis_url.as_deref(), Some(cpu)).await?
            }
            Kind::SocketIo => {
                procs::start_peer(
                    "node",
                    "socketio-server.mjs",
                    redis_url.as_deref(),
                    Some(cpu),
                )
                .await?
            }
            Kind::Bun => {
                let bun = procs::peers_dir()?.join("node_modules/.bin/bun");
                procs::start_peer(
                    &bun.to_string_lossy(),
                    "bun-server.mjs",
                    redis_url.as_deref(),
                    Some(cpu),
                )
                .await?
            }
        };
        started.push(node);
    }
    Ok(Servers {
        nodes: started,
        redis,
        redis_url,
    })
}

/// The peers to compare with, when asked for.
pub fn kinds(peers: bool) -> Vec<Kind> {
    if peers {
        vec![Kind::Tether, Kind::NodeWs, Kind::SocketIo, Kind::Bun]
    } else {
        vec![Kind::Tether]
    }
}
