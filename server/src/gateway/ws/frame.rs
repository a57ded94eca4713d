//! RFC 6455 framing as pure functions: reading the frames a client sends (masked, possibly
//! fragmented, with control frames in between) and writing the frames the gateway sends
//! (unmasked). Every violation maps to the close code the RFC asks for.

use std::fmt;

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0
    Continuation,
    /// 0x1
    Text,
    /// 0x2
    Binary,
    /// 0x8
    Close,
    /// 0x9
    Ping,
    /// 0xA
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A violation of the framing rules: the connection is closed with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// 1002 (protocol error), 1007 (invalid UTF-8) or 1009 (too big).
    pub code: u16,
    /// What was wrong.
    pub reason: &'static str,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

const fn protocol(reason: &'static str) -> Violation {
    Violation { code: 1002, reason }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last fragment of its message.
    pub fin: bool,
    /// Opcode.
    pub opcode: Opcode,
    /// The client's masking key.
    pub mask: [u8; 4],
    /// Payload length.
    pub len: usize,
    /// Bytes of the header itself.
    pub header_len: usize,
}

/// Reads a client frame header from the start of `buf`: `Ok(None)` when more bytes are
/// needed. Client frames must be masked; control frames must be final and at most 125
/// bytes; payloads above `max` are refused before they are read.
pub fn parse_header(buf: &[u8], max: usize) -> Result<Option<Header>, Violation> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(protocol("reserved bits set without an extension"));
    }
    let opcode = Opcode::from_bits(b0 & 0x0f).ok_or(protocol("reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(protocol("client frames must be masked"));
    }
    let (len, offset) = match b1 & 0x7f {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (u16::from_be_bytes([bytes[0], bytes[1]]) as u64, 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut n = [0u8; 8];
            n.copy_from_slice(bytes);
            let len = u64::from_be_bytes(n);
            if len >> 63 != 0 {
                return Err(protocol("payload length has its top bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(protocol(
            "control frames must be final and at most 125 bytes",
        ));
    }
    if len > max as u64 {
        return Err(Violation {
            code: 1009,
            reason: "frame too large",
        });
    }
    let Some(mask) = buf.get(offset..offset + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        len: len as usize,
        header_len: offset + 4,
    }))
}

/// Unmasks a payload in place; `offset` is the payload position of `data[0]` (for
/// payloads unmasked in pieces).
pub fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[(offset + i) & 3];
    }
}

/// Appends a server frame header (unmasked) for a payload of `len` bytes.
pub fn write_header(out: &mut Vec<u8>, opcode: Opcode, len: usize) {
    out.push(0x80 | opcode.bits());
    match len {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
}

/// Appends a whole server frame.
pub fn write_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    write_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (cut to fit 125 bytes).
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    write_header(out, Opcode::Close, 2 + end);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// The code of a client close frame's payload, validated: `Ok(None)` for an empty
/// payload, an error for a one-byte payload, a code a client may not send, or a reason
/// that is not UTF-8.
pub fn close_code(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                return Err(protocol("close code a client may not send"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(Violation {
                    code: 1007,
                    reason: "close reason is not UTF-8",
                });
            }
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 65535 => {
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
        out
    }

    #[test]
    fn a_masked_text_frame_parses_and_unmasks() {
        let frame = masked(0x1, true, b"hello", [9, 8, 7, 6]);
        let header = parse_header(&frame, 1024).unwrap().unwrap();
        assert_eq!(
            (header.fin, header.opcode, header.len, header.header_len),
            (true, Opcode::Text, 5, 6)
        );
        let mut payload = frame[6..].to_vec();
        unmask(&mut payload, header.mask, 0);
        assert_eq!(payload, b"hello");
        let mut pieces = frame[6..].to_vec();
        unmask(&mut pieces[..2], header.mask, 0);
        unmask(&mut pieces[2..], header.mask, 2);
        assert_eq!(
            pieces, b"hello",
            "unmasking in pieces keeps the key position"
        );
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let frame = masked(0x1, true, &[0; 300], [1, 2, 3, 4]);
        for cut in 0..8 {
            assert_eq!(parse_header(&frame[..cut], 1024), Ok(None), "{cut}");
        }
        assert_eq!(parse_header(&frame[..8], 1024).unwrap().unwrap().len, 300);
        let big = masked(0x2, true, &vec![0; 70_000], [1, 2, 3, 4]);
        assert_eq!(parse_header(&big, 100_000).unwrap().unwrap().header_len, 14);
    }

    #[test]
    fn rule_breaking_frames_are_refused_with_their_code() {
        let code = |bytes: &[u8], max| parse_header(bytes, max).unwrap_err().code;
        assert_eq!(code(&[0x81, 0x05], 1024), 1002, "unmasked");
        assert_eq!(code(&[0xC1, 0x80], 1024), 1002, "rsv1");
        assert_eq!(code(&[0x83, 0x80], 1024), 1002, "reserved opcode");
        assert_eq!(code(&[0x09, 0x80], 1024), 1002, "fragmented ping");
        assert_eq!(code(&[0x89, 0xFE, 0, 126], 1024), 1002, "long ping");
        assert_eq!(code(&[0x81, 0xFE, 0x08, 0x00], 1024), 1009, "2048 > 1024");
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(code(&huge, 1024), 1002);
    }

    #[test]
    fn server_frames_use_the_shortest_length_form() {
        for (len, header) in [
            (5usize, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
        ] {
            let mut out = Vec::new();
            write_header(&mut out, Opcode::Text, len);
            assert_eq!(out.len(), header, "{len}");
            assert_eq!(out[0], 0x81);
        }
    }

    #[test]
    fn close_frames_carry_a_code_and_a_reason_that_fits() {
        let mut out = Vec::new();
        write_close(&mut out, 4008, &"é".repeat(100));
        assert_eq!(out[0], 0x88);
        assert!(out[1] as usize <= 125);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 4008);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    fn client_close_payloads_are_checked() {
        assert_eq!(close_code(&[]), Ok(None));
        assert_eq!(close_code(&[0x03, 0xE8]), Ok(Some(1000)));
        assert_eq!(close_code(&[0x0F, 0xA0, b'o', b'k']), Ok(Some(4000)));
        assert_eq!(close_code(&[0x03]).unwrap_err().code, 1002);
        assert_eq!(
            close_code(&[0x03, 0xED]).unwrap_err().code,
            1002,
            "1005 may not be sent"
        );
        assert_eq!(close_code(&[0x03, 0xE8, 0xFF]).unwrap_err().code, 1007);
    }
}
