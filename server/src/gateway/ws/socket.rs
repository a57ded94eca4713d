//! A server-side WebSocket over a `TcpStream` that holds no buffer while idle.
//!
//! Reads wait for readiness, then read into a per-thread scratch buffer and decode every
//! complete frame in place; only the tail of an incomplete frame (or the fragments of an
//! unfinished message) is kept per connection. Writes encode a batch of frames into a
//! per-thread buffer and hand it to the kernel in one `write`; only what the kernel did
//! not take is kept per connection. An idle connection therefore costs its socket and a
//! few words, not the kilobytes of read and write buffers a general WebSocket stream keeps.

use super::frame::{self, Opcode, Violation};
use bytes::Bytes;
use std::cell::RefCell;
use std::io;
use tokio::net::TcpStream;

/// Scratch read size: one read takes up to this much.
const SCRATCH_BYTES: usize = 64 * 1024;
/// A per-connection buffer above this size is released once empty.
const KEEP_CAPACITY: usize = 4 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A complete text message (UTF-8 checked).
    Text(String),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A pong (pings are answered by the socket itself).
    Pong,
    /// A ping (already answered).
    Ping,
    /// The client closes, with its code when it sent one.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The socket failed.
    Io(io::Error),
    /// The client broke the framing rules.
    Violation(Violation),
}

/// Fragments of a message in progress.
#[derive(Default)]
struct Assembly {
    kind: Option<Opcode>,
    data: Vec<u8>,
}

/// What a connection keeps between reads or writes. Allocated only while something is
/// kept: most of the time an idle connection holds none of it.
#[derive(Default)]
struct Pending {
    /// Bytes of a frame that is not complete yet.
    partial: Vec<u8>,
    assembly: Assembly,
    /// Bytes written but not yet taken by the kernel.
    unsent: Vec<u8>,
}

impl Pending {
    fn holds_nothing(&self) -> bool {
        self.partial.is_empty()
            && self.unsent.is_empty()
            && self.assembly.kind.is_none()
            && self.assembly.data.is_empty()
    }
}

/// The socket.
pub struct WsSocket {
    stream: TcpStream,
    pending: Option<Box<Pending>>,
    max_message: usize,
}

/// Decodes complete frames at the start of `buf`, unmasking in place; returns how many
/// bytes were consumed. Pongs to send go to `replies`.
fn decode(
    buf: &mut [u8],
    assembly: &mut Assembly,
    max_message: usize,
    events: &mut Vec<Incoming>,
    replies: &mut Vec<u8>,
) -> Result<usize, Violation> {
    let mut pos = 0;
    while let Some(header) = frame::parse_header(&buf[pos..], max_message)? {
        let start = pos + header.header_len;
        let end = start + header.len;
        if end > buf.len() {
            break;
        }
        let payload = &mut buf[start..end];
        frame::unmask(payload, header.mask, 0);
        pos = end;
        match header.opcode {
            Opcode::Text | Opcode::Binary => {
                if assembly.kind.is_some() {
                    return Err(Violation {
                        code: 1002,
                        reason: "new message inside a fragmented one",
                    });
                }
                if header.fin {
                    events.push(complete(header.opcode, payload.to_vec())?);
                } else {
                    assembly.kind = Some(header.opcode);
                    assembly.data.extend_from_slice(payload);
                }
            }
            Opcode::Continuation => {
                let Some(kind) = assembly.kind else {
                    return Err(Violation {
                        code: 1002,
                        reason: "continuation without a message",
                    });
                };
                if assembly.data.len() + payload.len() > max_message {
                    return Err(Violation {
                        code: 1009,
                        reason: "message too large",
                    });
                }
                assembly.data.extend_from_slice(payload);
                if header.fin {
                    assembly.kind = None;
                    let data = std::mem::take(&mut assembly.data);
                    events.push(complete(kind, data)?);
                }
            }
            Opcode::Ping => {
                frame::write_frame(replies, Opcode::Pong, payload);
                events.push(Incoming::Ping);
            }
            Opcode::Pong => events.push(Incoming::Pong),
            Opcode::Close => {
                events.push(Incoming::Close(frame::close_code(payload)?));
                break;
            }
        }
    }
    Ok(pos)
}

fn complete(kind: Opcode, data: Vec<u8>) -> Result<Incoming, Violation> {
    match kind {
        Opcode::Text => String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| Violation {
                code: 1007,
                reason: "text message is not UTF-8",
            }),
        _ => Ok(Incoming::Binary(data)),
    }
}

impl WsSocket {
    /// Wraps an upgraded stream; `leftover` holds bytes the client sent right after its
    /// upgrade request.
    pub fn new(stream: TcpStream, leftover: Bytes, max_message: usize) -> WsSocket {
        let pending = (!leftover.is_empty()).then(|| {
            Box::new(Pending {
                partial: leftover.to_vec(),
                ..Pending::default()
            })
        });
        WsSocket {
            stream,
            pending,
            max_message,
        }
    }

    fn pending(&mut self) -> &mut Pending {
        self.pending.get_or_insert_with(Box::default)
    }

    /// Gives back what buffers no longer hold: large empty buffers, and the whole
    /// [`Pending`] once it keeps nothing.
    fn settle(&mut self) {
        let Some(pending) = self.pending.as_deref_mut() else {
            return;
        };
        if pending.holds_nothing() {
            self.pending = None;
            return;
        }
        release_if_large(&mut pending.partial);
        release_if_large(&mut pending.unsent);
        if pending.assembly.kind.is_none() {
            release_if_large(&mut pending.assembly.data);
        }
    }

    /// Waits until the socket can be read.
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Polls read readiness (no waiter allocation: the waker lives in the socket's slot).
    pub fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.stream.poll_read_ready(cx)
    }

    /// Polls write readiness.
    pub fn poll_write_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.stream.poll_write_ready(cx)
    }

    /// Reads what the socket has and decodes every complete message into `events`;
    /// `Ok(false)` when the client closed the TCP stream.
    pub fn read_available(&mut self, events: &mut Vec<Incoming>) -> Result<bool, ReadError> {
        let mut replies = Vec::new();
        let open = SCRATCH.with(|scratch| -> Result<bool, ReadError> {
            let mut scratch = scratch.borrow_mut();
            let n = match self.stream.try_read(&mut scratch) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(ReadError::Io(e)),
            };
            match self.pending.as_deref_mut() {
                Some(pending) if !pending.partial.is_empty() => {
                    pending.partial.extend_from_slice(&scratch[..n]);
                    let used = decode(
                        &mut pending.partial,
                        &mut pending.assembly,
                        self.max_message,
                        events,
                        &mut replies,
                    )
                    .map_err(ReadError::Violation)?;
                    pending.partial.drain(..used);
                }
                kept => {
                    // Decoded straight from the scratch buffer; only an incomplete tail
                    // or a message in fragments is kept.
                    let mut fresh = Assembly::default();
                    let assembly = match kept {
                        Some(pending) => &mut pending.assembly,
                        None => &mut fresh,
                    };
                    let used = decode(
                        &mut scratch[..n],
                        assembly,
                        self.max_message,
                        events,
                        &mut replies,
                    )
                    .map_err(ReadError::Violation)?;
                    if used < n || fresh.kind.is_some() {
                        let pending = self.pending();
                        pending.partial.extend_from_slice(&scratch[used..n]);
                        if fresh.kind.is_some() {
                            pending.assembly = fresh;
                        }
                    }
                }
            }
            Ok(true)
        })?;
        self.settle();
        if !replies.is_empty() {
            self.queue_bytes(&replies).map_err(ReadError::Io)?;
        }
        Ok(open)
    }

    /// Bytes the client sent with its upgrade request are decoded at once by
    /// [`WsSocket::read_available`]'s caller through this check.
    pub fn has_buffered_input(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|pending| !pending.partial.is_empty())
    }

    /// Decodes what is already buffered (bytes that came with the upgrade) without reading.
    pub fn decode_buffered(&mut self, events: &mut Vec<Incoming>) -> Result<(), ReadError> {
        let mut replies = Vec::new();
        let max_message = self.max_message;
        let pending = self.pending();
        let used = decode(
            &mut pending.partial,
            &mut pending.assembly,
            max_message,
            events,
            &mut replies,
        )
        .map_err(ReadError::Violation)?;
        pending.partial.drain(..used);
        self.settle();
        if !replies.is_empty() {
            self.queue_bytes(&replies).map_err(ReadError::Io)?;
        }
        Ok(())
    }

    /// Lets `fill` encode frames (with [`frame::write_frame`]) into the per-thread output
    /// buffer, then sends them in one write; returns what `fill` returned.
    pub fn send_with<T>(&mut self, fill: impl FnOnce(&mut Vec<u8>) -> T) -> io::Result<T> {
        OUT.with(|out| {
            let mut out = out.borrow_mut();
            out.clear();
            let filled = fill(&mut out);
            let result = if out.is_empty() {
                Ok(())
            } else {
                self.queue_bytes(&out)
            };
            if out.capacity() > SCRATCH_BYTES {
                *out = Vec::new();
            }
            result.map(|()| filled)
        })
    }

    /// Sends text frames in one write where the kernel takes them; the rest waits in
    /// the unsent buffer (see [`WsSocket::write_pending`]).
    pub fn send_texts<'a>(
        &mut self,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<()> {
        self.send(payloads.into_iter().map(|p| (Opcode::Text, p)))
    }

    /// Sends frames of any kind (binary ones for the echo endpoint).
    pub fn send<'a>(
        &mut self,
        frames: impl IntoIterator<Item = (Opcode, &'a [u8])>,
    ) -> io::Result<()> {
        self.send_with(|out| {
            for (opcode, payload) in frames {
                frame::write_frame(out, opcode, payload);
            }
        })
    }

    /// Sends a close frame.
    pub fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let mut out = Vec::with_capacity(4 + reason.len());
        frame::write_close(&mut out, code, reason);
        self.queue_bytes(&out)
    }

    fn queue_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.unsent() > 0 {
            self.pending().unsent.extend_from_slice(bytes);
            return Ok(());
        }
        let taken = match self.stream.try_write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if taken < bytes.len() {
            self.pending().unsent.extend_from_slice(&bytes[taken..]);
        }
        Ok(())
    }

    /// Bytes waiting for the kernel to take them.
    pub fn unsent(&self) -> usize {
        self.pending
            .as_ref()
            .map_or(0, |pending| pending.unsent.len())
    }

    /// Waits until the socket can take more.
    pub async fn writable(&self) -> io::Result<()> {
        self.stream.writable().await
    }

    /// Writes as much of the unsent bytes as the kernel takes now.
    pub fn write_pending(&mut self) -> io::Result<()> {
        let Some(pending) = self.pending.as_deref_mut() else {
            return Ok(());
        };
        while !pending.unsent.is_empty() {
            match self.stream.try_write(&pending.unsent) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    pending.unsent.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.settle();
        Ok(())
    }

    /// Writes everything unsent, waiting as needed.
    pub async fn flush(&mut self) -> io::Result<()> {
        while self.unsent() > 0 {
            self.writable().await?;
            self.write_pending()?;
        }
        Ok(())
    }
}

fn release_if_large(buffer: &mut Vec<u8>) {
    if buffer.is_empty() && buffer.capacity() > KEEP_CAPACITY {
        *buffer = Vec::new();
    } else if buffer.is_empty() && buffer.capacity() > 0 {
        buffer.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![
            if fin { 0x80 } else { 0 } | opcode,
            0x80 | payload.len() as u8,
        ];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode_all(bytes: &[u8]) -> (Result<usize, Violation>, Vec<Incoming>, Vec<u8>) {
        let mut buf = bytes.to_vec();
        let mut events = Vec::new();
        let mut replies = Vec::new();
        let result = decode(
            &mut buf,
            &mut Assembly::default(),
            1024,
            &mut events,
            &mut replies,
        );
        (result, events, replies)
    }

    #[test]
    fn several_frames_in_one_read_all_decode() {
        let mut bytes = masked(0x1, true, b"one");
        bytes.extend(masked(0x1, true, b"two"));
        bytes.extend(&masked(0x1, true, b"three")[..4]);
        let (used, events, _) = decode_all(&bytes);
        assert_eq!(
            events,
            vec![Incoming::Text("one".into()), Incoming::Text("two".into())]
        );
        assert_eq!(used.unwrap(), 18, "the incomplete third frame stays");
    }

    #[test]
    fn fragments_with_a_ping_between_make_one_message_and_a_pong() {
        let mut bytes = masked(0x1, false, b"hel");
        bytes.extend(masked(0x9, true, b"p"));
        bytes.extend(masked(0x0, true, b"lo"));
        let (used, events, replies) = decode_all(&bytes);
        assert_eq!(used.unwrap(), bytes.len());
        assert_eq!(events, vec![Incoming::Ping, Incoming::Text("hello".into())]);
        assert_eq!(replies, vec![0x8A, 1, b'p']);
    }

    #[test]
    fn broken_sequences_are_violations() {
        let mut two_starts = masked(0x1, false, b"a");
        two_starts.extend(masked(0x1, true, b"b"));
        assert_eq!(decode_all(&two_starts).0.unwrap_err().code, 1002);
        assert_eq!(
            decode_all(&masked(0x0, true, b"x")).0.unwrap_err().code,
            1002
        );
        assert_eq!(
            decode_all(&masked(0x1, true, &[0xff, 0xfe]))
                .0
                .unwrap_err()
                .code,
            1007
        );
        let (_, events, _) = decode_all(&masked(0x8, true, &[0x03, 0xE8]));
        assert_eq!(events, vec![Incoming::Close(Some(1000))]);
    }

    #[test]
    fn a_fragmented_message_may_not_exceed_the_limit() {
        let mut buf = masked(0x1, false, &[b'a'; 100]);
        buf.extend(masked(0x0, true, &[b'a'; 100]));
        let mut events = Vec::new();
        let result = decode(
            &mut buf,
            &mut Assembly::default(),
            150,
            &mut events,
            &mut Vec::new(),
        );
        assert_eq!(result.unwrap_err().code, 1009);
    }

    /// A server socket and the client end of its TCP connection.
    async fn pair() -> (WsSocket, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (WsSocket::new(server, Bytes::new(), 1024), client)
    }

    async fn read_some(socket: &mut WsSocket, events: &mut Vec<Incoming>) {
        socket.readable().await.unwrap();
        assert!(socket.read_available(events).unwrap());
    }

    #[tokio::test]
    async fn buffers_exist_only_while_something_is_kept() {
        use tokio::io::AsyncWriteExt;
        let (mut socket, mut client) = pair().await;
        assert!(socket.pending.is_none(), "a new connection keeps nothing");
        let mut events = Vec::new();

        // Half a frame is kept until the rest comes.
        let whole = masked(0x1, true, b"hello");
        client.write_all(&whole[..4]).await.unwrap();
        read_some(&mut socket, &mut events).await;
        assert!(events.is_empty());
        assert!(socket.has_buffered_input());
        client.write_all(&whole[4..]).await.unwrap();
        read_some(&mut socket, &mut events).await;
        assert_eq!(events, vec![Incoming::Text("hello".into())]);
        assert!(socket.pending.is_none(), "a completed frame leaves nothing");

        // So is the first fragment of a message, across reads.
        events.clear();
        client.write_all(&masked(0x1, false, b"hel")).await.unwrap();
        read_some(&mut socket, &mut events).await;
        assert!(events.is_empty());
        assert!(socket.pending.is_some(), "the fragment is kept");
        client.write_all(&masked(0x0, true, b"lo")).await.unwrap();
        read_some(&mut socket, &mut events).await;
        assert_eq!(events, vec![Incoming::Text("hello".into())]);
        assert!(socket.pending.is_none());
    }

    #[tokio::test]
    async fn bytes_the_kernel_did_not_take_wait_and_then_go() {
        use tokio::io::AsyncReadExt;
        let (mut socket, mut client) = pair().await;
        let payload = vec![b'x'; 1000];
        // Far more than the socket buffers hold while the client reads nothing.
        let mut sent = 0;
        while socket.unsent() == 0 {
            socket.send_texts([payload.as_slice()]).unwrap();
            sent += 1;
            assert!(sent < 100_000, "the kernel never pushed back");
        }
        assert!(socket.pending.is_some());
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = vec![0; 64 * 1024];
            while total < sent * 1004 {
                total += client.read(&mut buf).await.unwrap();
            }
            total
        });
        socket.flush().await.unwrap();
        assert!(
            socket.pending.is_none(),
            "nothing is kept once all is written"
        );
        assert_eq!(
            reader.await.unwrap(),
            sent * 1004,
            "every byte arrived once"
        );
    }
}
