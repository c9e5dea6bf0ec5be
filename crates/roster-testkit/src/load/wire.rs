//! The client's WebSocket framing, built from tungstenite's pieces: the opening handshake
//! runs tungstenite's [`HandshakeMachine`] (its request from `generate_request`, the answer
//! checked against `derive_accept_key`), headers are read with [`FrameHeader::parse`] and
//! frames written with [`Frame::format`]. What this module adds is where the bytes go.
//!
//! tungstenite's `WebSocket` hands over whole messages only: it assembles a fragmented
//! `presence_state` (about 880 KB in a room of 10,000) before the client sees a byte of it,
//! so one process holding 10,000 members held gigabytes of them. Its `FrameSocket` reads
//! single frames but into a 128 KiB read buffer per socket that it fills with zeros (2.5 GB
//! for 19,900 sockets), and still gathers each frame's payload whole. [`FrameReader`] instead
//! takes whatever bytes a read returned (read into one buffer per thread, not per socket)
//! and hands a data frame's payload on as it comes ([`Piece::Payload`]), so a message is
//! parsed as it arrives (`message`); only a header split between two reads (at most 14
//! bytes) and a control frame's payload (at most 125 bytes) are kept.

use std::io::{Cursor, Read, Write};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::{generate_request, Response};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::handshake::machine::{HandshakeMachine, RoundResult, StageResult};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// The longest frame header (RFC 6455 §5.2).
const MAX_HEADER: usize = 14;
/// The longest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL: u64 = 125;

/// What the bytes of a read hold, in order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// A data frame begins (`Continue` for a message's later fragments).
    Start { opcode: Data, fin: bool },
    /// Bytes of the data frame's payload (unmasked: the server does not mask).
    Payload(&'a [u8]),
    /// The data frame's payload is complete; `fin` ends its message.
    End { fin: bool },
    /// A whole control frame.
    Control { opcode: Control, payload: Vec<u8> },
}

/// A frame the server should not have sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum WireError {
    #[error("WebSocket protocol error: {0}")]
    Protocol(String),
}

fn protocol(what: impl Into<String>) -> WireError {
    WireError::Protocol(what.into())
}

/// The frame being read.
#[derive(Debug)]
struct Current {
    opcode: OpCode,
    fin: bool,
    /// Payload bytes still to come.
    remaining: u64,
    /// Whether [`Piece::Start`] was handed out.
    started: bool,
}

/// Splits the server's bytes into [`Piece`]s, across reads: see the module docs.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    /// The start of a header whose rest has not arrived.
    partial: Vec<u8>,
    current: Option<Current>,
    /// A control frame's payload so far.
    control: Vec<u8>,
}

impl FrameReader {
    /// The next piece of `input`, which it advances past what it used; `None` once `input`
    /// is used up (what remains of a header is kept for the next read).
    pub(crate) fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Piece<'a>>, WireError> {
        loop {
            if let Some(cur) = &mut self.current {
                if let OpCode::Data(opcode) = cur.opcode {
                    if !cur.started {
                        cur.started = true;
                        return Ok(Some(Piece::Start { opcode, fin: cur.fin }));
                    }
                    if cur.remaining == 0 {
                        let fin = cur.fin;
                        self.current = None;
                        return Ok(Some(Piece::End { fin }));
                    }
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(cur.remaining).unwrap_or(usize::MAX).min(input.len());
                    let (bytes, rest) = input.split_at(n);
                    *input = rest;
                    cur.remaining -= n as u64;
                    return Ok(Some(Piece::Payload(bytes)));
                }
                let OpCode::Control(opcode) = cur.opcode else { unreachable!("data frames are handled above") };
                let n = usize::try_from(cur.remaining).unwrap_or(usize::MAX).min(input.len());
                self.control.extend_from_slice(&input[..n]);
                *input = &input[n..];
                cur.remaining -= n as u64;
                if cur.remaining > 0 {
                    return Ok(None);
                }
                self.current = None;
                return Ok(Some(Piece::Control { opcode, payload: std::mem::take(&mut self.control) }));
            }
            if input.is_empty() {
                return Ok(None);
            }
            let Some((header, len)) = self.header(input)? else { return Ok(None) };
            self.current = Some(check(header, len)?);
        }
    }

    /// Parse the next header from `partial` and `input`; `None` (what there was kept) when
    /// it is not complete yet.
    fn header(&mut self, input: &mut &[u8]) -> Result<Option<(FrameHeader, u64)>, WireError> {
        let parse = |bytes: &[u8]| {
            let mut cursor = Cursor::new(bytes);
            FrameHeader::parse(&mut cursor)
                .map(|h| h.map(|h| (h, cursor.position() as usize)))
                .map_err(|e| protocol(e.to_string()))
        };
        if self.partial.is_empty() {
            return match parse(input)? {
                Some((header, used)) => {
                    *input = &input[used..];
                    Ok(Some(header))
                }
                None => {
                    self.partial.extend_from_slice(input);
                    *input = &[];
                    Ok(None)
                }
            };
        }
        let had = self.partial.len();
        let take = (MAX_HEADER - had).min(input.len());
        self.partial.extend_from_slice(&input[..take]);
        match parse(&self.partial)? {
            Some((header, used)) => {
                *input = &input[used - had..];
                self.partial.clear();
                Ok(Some(header))
            }
            None => {
                *input = &input[take..];
                Ok(None)
            }
        }
    }
}

/// A header the client accepts (RFC 6455 §5.2, §5.5): unmasked, no extension bits, a known
/// opcode, control frames final and short.
fn check(header: FrameHeader, len: u64) -> Result<Current, WireError> {
    if header.mask.is_some() {
        return Err(protocol("a masked frame from the server"));
    }
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(protocol("reserved bits set"));
    }
    match header.opcode {
        OpCode::Data(Data::Reserved(x)) | OpCode::Control(Control::Reserved(x)) => {
            return Err(protocol(format!("reserved opcode {x}")))
        }
        OpCode::Control(_) if !header.is_final || len > MAX_CONTROL => {
            return Err(protocol("a fragmented or long control frame"))
        }
        _ => {}
    }
    Ok(Current { opcode: header.opcode, fin: header.is_final, remaining: len, started: false })
}

/// The bytes of a client frame: masked, as clients must (RFC 6455 §5.3).
pub(crate) fn client_frame(mut frame: Frame) -> Vec<u8> {
    frame.header_mut().mask = Some(rand::random());
    let mut out = Vec::with_capacity(frame.len());
    // Writing into a Vec cannot fail.
    let _ = frame.format(&mut out);
    out
}

/// The text frame of `text`, as a client sends it.
pub(crate) fn text_frame(text: String) -> Vec<u8> {
    client_frame(Frame::message(text.into_bytes(), OpCode::Data(Data::Text), true))
}

/// A tokio socket as tungstenite's blocking `Read`/`Write`: `WouldBlock` when it is not
/// ready, for the handshake machine.
struct Nonblocking<'a>(&'a TcpStream);

impl Read for Nonblocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Nonblocking<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The WebSocket opening handshake for `url` on `stream`. Returns the bytes the server sent
/// after its answer (frames already behind it), for the [`FrameReader`].
pub(crate) async fn handshake(stream: &TcpStream, url: &str) -> Result<Vec<u8>, String> {
    let request = url.into_client_request().map_err(|e| e.to_string())?;
    let (request, key) = generate_request(request).map_err(|e| e.to_string())?;
    let mut machine = HandshakeMachine::start_write(Nonblocking(stream), request);
    loop {
        machine = match machine.single_round::<Response>().map_err(|e| e.to_string())? {
            RoundResult::WouldBlock(m) => {
                stream.writable().await.map_err(|e| e.to_string())?;
                m
            }
            RoundResult::Incomplete(m) => m,
            RoundResult::StageFinished(StageResult::DoneWriting(_)) => break,
            RoundResult::StageFinished(StageResult::DoneReading { .. }) => return Err("read while writing".into()),
        }
    }
    let mut machine = HandshakeMachine::start_read(Nonblocking(stream));
    let (response, tail) = loop {
        machine = match machine.single_round::<Response>().map_err(|e| e.to_string())? {
            RoundResult::WouldBlock(m) => {
                stream.readable().await.map_err(|e| e.to_string())?;
                m
            }
            RoundResult::Incomplete(m) => m,
            RoundResult::StageFinished(StageResult::DoneReading { result, tail, .. }) => break (result, tail),
            RoundResult::StageFinished(StageResult::DoneWriting(_)) => return Err("wrote while reading".into()),
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("HTTP {}", response.status()));
    }
    let accept = derive_accept_key(key.as_bytes());
    if response.headers().get("Sec-WebSocket-Accept").is_none_or(|v| v.as_bytes() != accept.as_bytes()) {
        return Err("a wrong Sec-WebSocket-Accept".into());
    }
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    fn bytes_of(frame: Frame) -> Vec<u8> {
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    /// Everything `reader` makes of `chunks`, payload pieces joined per frame.
    fn pieces(chunks: &[&[u8]]) -> Vec<String> {
        let mut reader = FrameReader::default();
        let mut out = Vec::new();
        let mut payload = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            while let Some(piece) = reader.next(&mut input).unwrap() {
                match piece {
                    Piece::Start { opcode, fin } => out.push(format!("start {opcode} {fin}")),
                    Piece::Payload(b) => payload.extend_from_slice(b),
                    Piece::End { fin } => {
                        let bytes = std::mem::take(&mut payload);
                        let shown = if bytes.len() > 16 {
                            format!("{} bytes", bytes.len())
                        } else {
                            String::from_utf8(bytes).unwrap()
                        };
                        out.push(format!("{shown} end {fin}"))
                    }
                    Piece::Control { opcode, payload } => out.push(format!("{opcode} {payload:?}")),
                }
            }
            assert!(input.is_empty());
        }
        out
    }

    #[test]
    fn frames_split_anywhere_read_the_same_as_whole() {
        let long = "x".repeat(70_000);
        assert_eq!(long.len(), 70_000);
        let mut wire = Vec::new();
        wire.extend(bytes_of(Frame::message("[\"a\",", OpCode::Data(Data::Text), false)));
        wire.extend(bytes_of(Frame::ping(&b"p1"[..])));
        wire.extend(bytes_of(Frame::message(long.clone(), OpCode::Data(Data::Continue), false)));
        wire.extend(bytes_of(Frame::message("", OpCode::Data(Data::Continue), true)));
        wire.extend(bytes_of(Frame::message("é", OpCode::Data(Data::Text), true)));
        wire.extend(bytes_of(Frame::close(Some(CloseFrame { code: CloseCode::Again, reason: "slow".into() }))));
        let whole = pieces(&[&wire]);
        let expected = vec![
            "start TEXT false".to_owned(),
            "[\"a\", end false".to_owned(),
            "PING [112, 49]".to_owned(),
            "start CONTINUE false".to_owned(),
            "70000 bytes end false".to_owned(),
            "start CONTINUE true".to_owned(),
            " end true".to_owned(),
            "start TEXT true".to_owned(),
            "é end true".to_owned(),
            "CLOSE [3, 245, 115, 108, 111, 119]".to_owned(),
        ];
        assert_eq!(whole, expected);
        // Every split in two, and byte by byte.
        for at in (0..wire.len()).filter(|&i| i < 200 || i > wire.len() - 200 || i % 997 == 0) {
            assert_eq!(pieces(&[&wire[..at], &wire[at..]]), expected, "split at {at}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(pieces(&bytes), expected);
    }

    #[test]
    fn frames_the_server_must_not_send_are_errors() {
        let mut masked = Frame::message("x", OpCode::Data(Data::Text), true);
        masked.header_mut().mask = Some([1, 2, 3, 4]);
        let mut long_ping = bytes_of(Frame::ping(vec![0u8; 126]));
        let mut rsv = bytes_of(Frame::message("x", OpCode::Data(Data::Text), true));
        rsv[0] |= 0x40;
        let mut fragmented_ping = bytes_of(Frame::ping(&b"p"[..]));
        fragmented_ping[0] &= 0x7f;
        for (what, wire) in [
            ("masked", bytes_of(masked)),
            ("long control", std::mem::take(&mut long_ping)),
            ("rsv", rsv),
            ("fragmented control", fragmented_ping),
            ("reserved opcode", vec![0x83, 0x00]),
        ] {
            let mut reader = FrameReader::default();
            let mut input: &[u8] = &wire;
            assert!(matches!(reader.next(&mut input), Err(WireError::Protocol(_))), "{what}");
        }
    }

    #[test]
    fn a_client_frame_is_masked_and_reads_back_as_its_text() {
        let wire = text_frame("hello".into());
        assert_eq!(wire[1] & 0x80, 0x80, "the mask bit");
        let mut cursor = Cursor::new(&wire[..]);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let mask = header.mask.unwrap();
        let body: Vec<u8> =
            wire[cursor.position() as usize..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        assert_eq!((len, &body[..]), (5, &b"hello"[..]));
    }
}
