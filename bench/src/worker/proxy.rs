//! Role `proxy` (S8): a fault proxy, a TCP relay in front of a gateway that can cut the
//! connections it carries. `cut <ms>` on stdin cuts every connection open at that moment
//! for `ms`: nothing passes in either direction (what the gateway sends is read and
//! dropped, as a tunnel drops packets; the client gets nothing and its socket stays
//! open), then the connection is dropped (an RST to the client, a close to the gateway),
//! as a phone sees when it comes out of the tunnel. Connections opened after the cut
//! started pass normally.

use super::{emit, now_ns, Proxy};
use anyhow::{Context, Result};
use serde_json::json;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the connections it carries: those numbered below `frozen_below`
/// pass nothing, those below `dropped_below` are dropped.
#[derive(Debug, Clone, Copy, Default)]
struct Cut {
    frozen_below: u64,
    dropped_below: u64,
}

pub async fn run(config: Proxy) -> Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let port = listener.local_addr()?.port();
    let (cut_tx, cut_rx) = watch::channel(Cut::default());
    let next_id = Rc::new(Cell::new(0u64));
    let live = Rc::new(Cell::new(0u64));
    {
        let (next_id, live) = (next_id.clone(), live.clone());
        let config = config.clone();
        tokio::task::spawn_local(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let id = next_id.get();
                next_id.set(id + 1);
                let (cut, live, upstream, source) =
                    (cut_rx.clone(), live.clone(), config.upstream, config.source);
                tokio::task::spawn_local(async move {
                    let Ok(upstream) = connect(upstream, source).await else {
                        return;
                    };
                    live.set(live.get() + 1);
                    relay(client, upstream, id, cut).await;
                    live.set(live.get() - 1);
                });
            }
        });
    }
    emit(json!({"ready": 1, "port": port}));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let Some(ms) = line.trim().strip_prefix("cut ") else {
            continue;
        };
        let ms: u64 = ms.trim().parse().context("cut <ms>")?;
        let below = next_id.get();
        let cut = live.get();
        let start_ns = now_ns();
        cut_tx.send_modify(|c| c.frozen_below = below);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let end_ns = now_ns();
        cut_tx.send_modify(|c| c.dropped_below = below);
        emit(json!({"cut": {"connections": cut, "start_ns": start_ns, "end_ns": end_ns}}));
    }
    Ok(())
}

async fn connect(addr: SocketAddr, source: Option<std::net::IpAddr>) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Copies both ways until either side closes or the connection is dropped by a cut.
async fn relay(
    mut client: TcpStream,
    mut upstream: TcpStream,
    id: u64,
    mut cut: watch::Receiver<Cut>,
) {
    let _ = client.set_nodelay(true);
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    loop {
        let state = *cut.borrow_and_update();
        if id < state.dropped_below {
            // An RST, as after a network loss: the client reads an error, not a clean end.
            let _ = client.set_zero_linger();
            return;
        }
        let frozen = id < state.frozen_below;
        tokio::select! {
            read = client.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if !frozen && upstream.write_all(&up[..n]).await.is_err() {
                    return;
                },
            },
            read = upstream.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if !frozen && client.write_all(&down[..n]).await.is_err() {
                    return;
                },
            },
            changed = cut.changed() => if changed.is_err() {
                return;
            },
        }
    }
}
