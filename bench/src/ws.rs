//! A minimal WebSocket client for load generation: the upgrade is written by hand, server
//! frames are parsed straight out of one read buffer, client frames are masked with a
//! fixed per-connection key. No per-message allocation on the receive path, so one
//! generator core can take well over a million small frames a second (a general-purpose
//! client would measure itself, not the server).

use anyhow::{anyhow, bail, Context, Result};
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One server frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text frame's payload.
    Text(&'a [u8]),
    /// A close frame's code (1005 when it carried none).
    Close(u16),
    /// Ping, pong, binary: counted, otherwise ignored.
    Other,
}

/// A client connection.
pub struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    mask: [u8; 4],
    out: Vec<u8>,
}

/// Where and how to connect.
pub struct Target<'a> {
    /// Server address.
    pub addr: SocketAddr,
    /// Request path with query (`/ws?app=...`).
    pub path: &'a str,
    /// Extra header lines, each ending in `\r\n`.
    pub headers: &'a str,
    /// Source address (127.0.0.2, 127.0.0.3, ... beyond 28k ports per address).
    pub source: Option<IpAddr>,
}

impl Ws {
    /// Connects and upgrades; fails with the HTTP status line when refused.
    pub async fn connect(target: &Target<'_>, read_buffer: usize) -> Result<Ws> {
        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(source) = target.source {
            socket
                .bind(SocketAddr::new(source, 0))
                .context("bind source address")?;
        }
        let mut stream = socket.connect(target.addr).await.context("tcp connect")?;
        stream.set_nodelay(true)?;
        let key = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            rand::random::<[u8; 16]>(),
        );
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{}\r\n",
            target.path, target.addr, target.headers
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; read_buffer.max(1024)];
        let mut end = 0;
        let head_end = loop {
            if end == buf.len() {
                bail!("upgrade response too large");
            }
            let n = stream.read(&mut buf[end..]).await?;
            if n == 0 {
                bail!("connection closed during the upgrade");
            }
            end += n;
            if let Some(i) = find(&buf[..end], b"\r\n\r\n") {
                break i + 4;
            }
        };
        let status = std::str::from_utf8(&buf[..head_end])
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        if !status.contains(" 101 ") {
            bail!("upgrade refused: {status}");
        }
        Ok(Ws {
            stream,
            buf,
            start: head_end,
            end,
            mask: rand::random(),
            out: Vec::with_capacity(256),
        })
    }

    /// The next frame (it borrows the read buffer until the next call).
    pub async fn next(&mut self) -> Result<Frame<'_>> {
        loop {
            if let Some((header, len, opcode)) = parse_header(&self.buf[self.start..self.end]) {
                if self.end - self.start >= header + len {
                    let payload = self.start + header;
                    self.start = payload + len;
                    let data = &self.buf[payload..payload + len];
                    return Ok(match opcode {
                        0x1 => Frame::Text(data),
                        0x8 => Frame::Close(if len >= 2 {
                            u16::from_be_bytes([data[0], data[1]])
                        } else {
                            1005
                        }),
                        _ => Frame::Other,
                    });
                }
                if header + len > self.buf.len() {
                    self.buf.resize(header + len, 0);
                }
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(anyhow!("connection closed"));
            }
            self.end += n;
        }
    }

    /// Reads up to `max` raw bytes without decoding (a deliberately slow reader); 0 when
    /// the server closed the stream.
    pub async fn read_raw(&mut self, max: usize) -> Result<usize> {
        let mut buf = vec![0u8; max.min(64 * 1024)];
        Ok(self.stream.read(&mut buf).await?)
    }

    /// Sends one text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.out.clear();
        encode_masked(&mut self.out, 0x1, text.as_bytes(), self.mask);
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    /// Sends a close frame and drops the socket.
    pub async fn close(mut self) {
        self.out.clear();
        encode_masked(&mut self.out, 0x8, &1000u16.to_be_bytes(), self.mask);
        let _ = self.stream.write_all(&self.out).await;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// (header length, payload length, opcode) of a complete server frame header.
fn parse_header(b: &[u8]) -> Option<(usize, usize, u8)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (header, len) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (4, u16::from_be_bytes([b[2], b[3]]) as usize)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (10, u64::from_be_bytes(n) as usize)
        }
        n => (2, n as usize),
    };
    Some((header + if masked { 4 } else { 0 }, len, opcode))
}

/// Appends one masked client frame.
pub fn encode_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// The number after `"key":` in a JSON text, without decoding the JSON.
pub fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(text, key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_each_length_class_parse() {
        assert_eq!(parse_header(&[0x81, 5]), Some((2, 5, 1)));
        assert_eq!(parse_header(&[0x81, 126, 1, 0]), Some((4, 256, 1)));
        assert_eq!(parse_header(&[0x88, 2]), Some((2, 2, 8)));
        assert_eq!(parse_header(&[0x81]), None);
        let mut long = vec![0x82, 127];
        long.extend_from_slice(&70_000u64.to_be_bytes());
        assert_eq!(parse_header(&long), Some((10, 70_000, 2)));
    }

    #[test]
    fn masking_round_trips() {
        let mut out = Vec::new();
        encode_masked(&mut out, 1, b"hello", [1, 2, 3, 4]);
        assert_eq!(out[1], 0x80 | 5);
        let unmasked: Vec<u8> = out[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
            .collect();
        assert_eq!(unmasked, b"hello");
    }

    #[test]
    fn numbers_are_found_without_decoding() {
        assert_eq!(
            number_after(br#"{"data":{"t":123456,"s":7}}"#, br#""t":"#),
            Some(123456)
        );
        assert_eq!(
            number_after(br#"{"seq":42,"type":"x"}"#, br#""seq":"#),
            Some(42)
        );
        assert_eq!(number_after(b"{}", br#""t":"#), None);
    }
}
