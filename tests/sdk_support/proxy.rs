//! A fault-injecting TCP proxy for the end-to-end tests: it forwards bytes between the
//! SDK and the gateway and can cut every connection, black-hole traffic (sockets stay
//! open, bytes vanish, like a dead NAT mapping), delay each chunk, or point at a new
//! upstream (a restarted gateway).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward.
    Pass,
    /// Keep the sockets, drop the bytes.
    BlackHole,
    /// Forward each chunk after this delay.
    Delay(Duration),
}

struct State {
    upstream: SocketAddr,
    mode: Mode,
    tasks: Vec<JoinHandle<()>>,
    accepted: u64,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(State {
            upstream,
            mode: Mode::Pass,
            tasks: Vec::new(),
            accepted: 0,
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared2 = shared.clone();
                let task = tokio::spawn(async move {
                    let upstream = shared2.lock().expect("proxy state").upstream;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return; // the upstream is down: the client sees the socket close
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    // Either direction ending ends both (a socket is cut as a whole), and
                    // aborting this task drops both sockets.
                    tokio::select! {
                        () = pipe(cr, sw, shared2.clone()) => {}
                        () = pipe(sr, cw, shared2.clone()) => {}
                    }
                });
                let mut st = shared.lock().expect("proxy state");
                st.accepted += 1;
                st.tasks.retain(|t| !t.is_finished());
                st.tasks.push(task);
            }
        });
        FaultProxy {
            addr,
            state,
            accept,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://` URL of the proxied gateway.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Changes what happens to traffic from now on (open sockets included).
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("proxy state").mode = mode;
    }

    /// Points new connections at another gateway.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.state.lock().expect("proxy state").upstream = upstream;
    }

    /// Drops every open connection at once, without a WebSocket close frame.
    pub fn cut(&self) {
        let mut st = self.state.lock().expect("proxy state");
        for task in st.tasks.drain(..) {
            task.abort();
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.lock().expect("proxy state").accepted
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<Mutex<State>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mode = state.lock().expect("proxy state").mode;
        match mode {
            Mode::Pass => {}
            Mode::BlackHole => continue,
            Mode::Delay(d) => tokio::time::sleep(d).await,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
