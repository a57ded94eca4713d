//! A Sentinel-managed Redis for tests: a master, one replica (`--replicaof`) and
//! `redis-server --sentinel` processes with a generated sentinel.conf (quorum 1, short
//! timeouts), each on a free port in its own directory, killed when dropped.

use super::redis::{free_port, redis_cli, send_signal, RedisServer};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tether_server::config::SentinelConfig;

pub const MASTER_NAME: &str = "mymaster";

/// One `redis-server --sentinel`.
pub struct RedisSentinel {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisSentinel {
    /// A sentinel watching the master on `master_port` as [`MASTER_NAME`].
    pub fn start(master_port: u16) -> RedisSentinel {
        Self::start_with_auth(master_port, None)
    }

    /// Same, logging in to the master and replicas with `password` (`auth-pass`).
    pub fn start_with_auth(master_port: u16, password: Option<&str>) -> RedisSentinel {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("tether-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 4000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n{auth}",
                dir = dir.display(),
                auth = password
                    .map(|p| format!("sentinel auth-pass {MASTER_NAME} {p}\n"))
                    .unwrap_or_default(),
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is on PATH (apt-get install redis-server)");
        let sentinel = RedisSentinel {
            port,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sentinel.cli(&["PING"]).is_none_or(|o| o.trim() != "PONG") {
            assert!(
                Instant::now() < deadline,
                "sentinel on port {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sentinel
    }

    /// Runs redis-cli against this sentinel; the output, or None when it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        redis_cli(self.port, args)
    }

    /// The port of the master this sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        let out = self.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Whether this sentinel knows a healthy replica (so it can fail over).
    pub fn knows_a_replica(&self) -> bool {
        self.cli(&["SENTINEL", "REPLICAS", MASTER_NAME])
            .is_some_and(|out| {
                let lines: Vec<&str> = out.lines().map(str::trim).collect();
                lines.windows(2).any(|w| w[0] == "flags" && w[1] == "slave")
            })
    }

    /// SIGSTOP: the sentinel freezes with its sockets open, like a host that died
    /// without closing them. Do not call [`Self::cli`] on it until [`Self::resume`].
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            send_signal(child, "-STOP");
        }
    }

    /// SIGCONT.
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            send_signal(child, "-CONT");
        }
    }

    /// Clients subscribed to some channel on this sentinel (sentinels have no PUBSUB
    /// command; CLIENT LIST shows each client's `sub=` count).
    pub fn subscribers(&self) -> usize {
        self.cli(&["CLIENT", "LIST"])
            .unwrap_or_default()
            .lines()
            .filter(|client| {
                client
                    .split(' ')
                    .any(|field| field.strip_prefix("sub=").is_some_and(|n| n != "0"))
            })
            .count()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, one replica and `sentinels` sentinels, ready to fail over.
pub struct SentinelSet {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisSentinel>,
}

impl SentinelSet {
    pub fn start(sentinels: usize) -> SentinelSet {
        Self::start_with_password(sentinels, None)
    }

    /// With `password`: the master and replica require it (`requirepass`, `masterauth`,
    /// set once the replica is in sync) and the sentinels log in with it.
    pub fn start_with_password(sentinels: usize, password: Option<&str>) -> SentinelSet {
        let master = RedisServer::start();
        let master_port = master.port.to_string();
        let replica = RedisServer::start_with(&[
            "--save",
            "",
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &master_port,
        ]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !replica
            .cli(&["INFO", "replication"])
            .is_some_and(|info| info.contains("master_link_status:up"))
        {
            assert!(Instant::now() < deadline, "the replica did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(password) = password {
            for server in [&master, &replica] {
                server
                    .cli(&["CONFIG", "SET", "masterauth", password])
                    .unwrap();
                server
                    .cli(&["CONFIG", "SET", "requirepass", password])
                    .unwrap();
            }
        }
        let sentinels: Vec<RedisSentinel> = (0..sentinels)
            .map(|_| RedisSentinel::start_with_auth(master.port, password))
            .collect();
        let set = SentinelSet {
            master,
            replica,
            sentinels,
        };
        loop {
            if set.sentinels.iter().all(RedisSentinel::knows_a_replica) {
                return set;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not sync or the sentinels did not discover it"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The gateway's settings for these sentinels.
    pub fn config(&self) -> SentinelConfig {
        SentinelConfig {
            sentinels: self
                .sentinels
                .iter()
                .map(|s| ("127.0.0.1".to_owned(), s.port))
                .collect(),
            master_name: MASTER_NAME.to_owned(),
            sentinel_password: None,
            password: None,
            db: 0,
            sync_replicas: 1,
            check_interval: Duration::from_secs(1),
        }
    }

    /// Asks the first sentinel for a failover (retried while it answers NOGOODSLAVE or
    /// INPROG), like an operator would.
    pub fn force_failover(&self) {
        self.force_failover_via(0);
    }

    /// [`Self::force_failover`] through sentinel `index`.
    pub fn force_failover_via(&self, index: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = self.sentinels[index].cli(&["SENTINEL", "FAILOVER", MASTER_NAME]);
            if answer.as_deref().map(str::trim) == Some("OK") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "SENTINEL FAILOVER kept failing: {answer:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every live sentinel names the replica as the master.
    pub fn wait_for_promotion(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self
            .sentinels
            .iter()
            .all(|s| s.master_port() == Some(self.replica.port))
        {
            assert!(
                Instant::now() < deadline,
                "the sentinels did not promote the replica within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
