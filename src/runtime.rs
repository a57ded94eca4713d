//! The SDK's own tokio runtime: two named worker threads shared by every client in the
//! process. Exported calls never block on it; they send commands or await channels, which
//! works from any foreign executor (a Kotlin coroutine, a Swift task, the JavaScript event
//! loop) without that side running a Rust runtime of its own.

use crate::error::Error;
use std::sync::LazyLock;
use tokio::runtime::{Builder, Handle, Runtime};

static RUNTIME: LazyLock<Result<Runtime, String>> = LazyLock::new(|| {
    Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tether-rt")
        // Host callbacks run on blocking threads (the token provider is awaited, not
        // waited for); a handful is plenty for a phone.
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
});

/// A handle to the SDK runtime, started on first use.
pub fn handle() -> Result<Handle, Error> {
    match &*RUNTIME {
        Ok(runtime) => Ok(runtime.handle().clone()),
        Err(e) => Err(Error::Config(format!(
            "could not start the SDK runtime: {e}"
        ))),
    }
}
