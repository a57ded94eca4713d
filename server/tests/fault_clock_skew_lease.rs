//! The per-user connection limit across nodes does not depend on node clocks: registry
//! expiries are written and compared in Redis's clock. Node B runs 5 s ahead
//! (libfaketime) with a 3 s registry lease; with node clocks its admission script would
//! take A's live entry for expired and admit a second connection at a limit of 1.
//! Needs libfaketime (Debian `faketime`, installed by `.ci/run`).

#![allow(clippy::unwrap_used)]

mod fault_support;
mod support;

use fault_support::Node;
use futures_util::StreamExt;
use support::redis::RedisServer;
use support::{APP, SECRET};
use tether_server::auth::{mint_token, Claims};

async fn connects(node: &Node, device: &str) -> bool {
    let token = mint_token(SECRET.as_bytes(), &Claims::new("u1", &[APP], 3600));
    let url = format!(
        "ws://{}/ws?app={APP}&device={device}&token={token}",
        node.addr
    );
    match tokio_tungstenite::connect_async(url).await {
        Ok((mut ws, _)) => {
            let first = ws.next().await;
            std::mem::forget(ws); // keep it open
            matches!(first, Some(Ok(_)))
        }
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_across_nodes_whose_clocks_differ_by_more_than_the_lease() {
    let redis = RedisServer::start();
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(lib).exists(),
        "libfaketime is needed (apt-get install faketime)"
    );
    let a = Node::start(&redis.url(), &[("WS_REGISTRY_TTL", "3")]);
    let b = Node::start(
        &redis.url(),
        &[
            ("WS_REGISTRY_TTL", "3"),
            ("LD_PRELOAD", lib),
            ("FAKETIME", "+5s"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    assert!(connects(&a, "phone").await);
    assert!(
        !connects(&b, "tablet").await,
        "node B (5 s ahead) admitted a second connection at a limit of 1"
    );
}
