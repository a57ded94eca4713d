//! Running workers from the orchestrator: each is this same binary started with
//! `worker <role as JSON>`, optionally pinned to a CPU, spoken to by JSON lines.

use crate::worker::Role;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A worker process.
pub struct Worker {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdin: Option<ChildStdin>,
}

impl Worker {
    /// Starts a worker for `role`, pinned to `cpu` when given.
    pub fn spawn(role: &Role, cpu: Option<&str>) -> Result<Worker> {
        let exe = std::env::current_exe()?;
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        command
            .arg("worker")
            .arg(serde_json::to_string(role)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().context("start worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let stdin = child.stdin.take();
        Ok(Worker {
            child,
            lines: BufReader::new(stdout).lines(),
            stdin,
        })
    }

    /// The worker's pid (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// The next JSON line, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .context("worker did not answer in time")??;
            let Some(line) = line else {
                bail!("worker exited")
            };
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                return Ok(value);
            }
        }
    }

    /// Tells a timed worker to start.
    pub async fn go(&mut self) -> Result<()> {
        self.send_line("go").await
    }

    /// Sends a command line (`go`, `stop`).
    pub async fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// SIGKILLs the worker and waits until it is gone (a crash test's kill).
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Closes stdin (a holding worker exits) and waits; kills it after 10 s.
    pub async fn stop(mut self) {
        self.stdin = None;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
