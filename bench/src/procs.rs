//! Processes under test (gateway nodes, Redis, peers) and what the kernel says about them:
//! resident memory, CPU time, kernel socket memory.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Secret every process of a run shares.
pub const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdef0123456789";
/// Admin key of every gateway of a run.
pub const ADMIN_KEY: &str = "bench-admin-key-0123456789";
/// App name used by every scenario.
pub const APP: &str = "bench";

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Where release binaries are (`cargo build --release` puts them next to this one).
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("binary directory")?.to_path_buf())
}

/// A child process, killed when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its pid.
    pub pid: u32,
}

impl Proc {
    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A command for `program`, pinned to `cpu` (taskset -c) when given.
fn command(program: impl AsRef<std::ffi::OsStr>, cpu: Option<&str>) -> Command {
    match cpu {
        Some(cpus) => {
            let mut pinned = Command::new("taskset");
            pinned.arg("-c").arg(cpus).arg(program);
            pinned
        }
        None => Command::new(program),
    }
}

fn spawn(mut command: Command, name: &str) -> Result<Proc> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let child = command.spawn().with_context(|| format!("start {name}"))?;
    let pid = child.id().context("pid")?;
    Ok(Proc { child, pid })
}

/// A `redis-server` without persistence on a free port.
pub async fn start_redis(cpu: Option<&str>) -> Result<(Proc, u16)> {
    let port = free_port()?;
    // Nothing is saved (no RDB, no AOF); the directory only keeps a stray dump out of the
    // working tree, so one directory serves every instance and none piles up.
    let dir = std::env::temp_dir().join("tether-bench-redis");
    std::fs::create_dir_all(&dir)?;
    let mut command = command("redis-server", cpu);
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args([
            "--client-output-buffer-limit",
            "pubsub",
            "256mb",
            "128mb",
            "60",
        ])
        .arg("--dir")
        .arg(&dir);
    let proc = spawn(command, "redis")?;
    wait_tcp(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    Ok((proc, port))
}

/// Options of a gateway node.
#[derive(Clone, Default)]
pub struct GatewayOptions {
    /// `REDIS_URL`, or the embedded broker.
    pub redis_url: Option<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// CPUs to pin it to (`taskset -c`).
    pub cpu: Option<String>,
    /// A fixed port (to restart a node where its clients expect it); a free one otherwise.
    pub port: Option<u16>,
}

/// A gateway node (release build) on a free port; returns when `/health` answers 200.
pub async fn start_gateway(options: &GatewayOptions) -> Result<(Proc, SocketAddr)> {
    let port = match options.port {
        Some(port) => port,
        None => free_port()?,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = command(bin_dir()?.join("tether-server"), options.cpu.as_deref());
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TETHER_BIND", addr.to_string())
        .env("JWT_SECRET", JWT_SECRET)
        .env("ADMIN_API_KEY", ADMIN_KEY)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        // A benchmark offers load on purpose: no rate limits, generous limits.
        .env("WS_RATE_LIMIT", "0")
        .env("WS_RATE_LIMIT_PER_USER", "0")
        .env("WS_MAX_CONNECTIONS_PER_USER", "100")
        .env("WS_HEARTBEAT_INTERVAL", "25000")
        .env("WS_CONNECTION_TIMEOUT", "120000");
    if let Some(url) = &options.redis_url {
        command.env("REDIS_URL", url);
    }
    for (k, v) in &options.env {
        command.env(k, v);
    }
    let proc = spawn(command, "tether-server")?;
    wait_health(addr).await?;
    Ok((proc, addr))
}

/// A peer server (node or bun running a script from `bench/peers`), on a free port.
pub async fn start_peer(
    program: &str,
    script: &str,
    redis_url: Option<&str>,
    cpu: Option<&str>,
) -> Result<(Proc, SocketAddr)> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let peers = peers_dir()?;
    let mut command = command(program, cpu);
    command
        .arg(peers.join(script))
        .current_dir(&peers)
        .env("PORT", port.to_string())
        .env("JWT_SECRET", JWT_SECRET)
        .env("ADMIN_API_KEY", ADMIN_KEY);
    if let Some(url) = redis_url {
        command.env("REDIS_URL", url);
    }
    let proc = spawn(command, &format!("{program} {script}"))?;
    wait_health(addr).await?;
    Ok((proc, addr))
}

/// `bench/peers` (the JS peers and their node_modules).
pub fn peers_dir() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest.join("peers"))
}

async fn wait_tcp(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("{addr} never accepted a connection")
}

async fn wait_health(addr: SocketAddr) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("http://{addr}/health")).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{addr} never became healthy")
}

/// Resident memory of a process, bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| {
        format!("process {pid} is gone (it exited or was killed during the run)")
    })?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("VmRSS")?;
    Ok(kb * 1024)
}

/// CPU time (user + system) of a process and its threads, seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, so split after ')').
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Kernel memory that grows with sockets: slab plus TCP buffer pages, bytes.
pub fn kernel_socket_bytes() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let slab_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("Slab")?;
    let sockstat = std::fs::read_to_string("/proc/net/sockstat")?;
    let tcp_pages: u64 = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(slab_kb * 1024 + tcp_pages * 4096)
}
