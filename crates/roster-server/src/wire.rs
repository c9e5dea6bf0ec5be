//! A socket's byte stream, shared by tungstenite and the socket's own frame writer ([`Wire`]).
//!
//! tungstenite does all the reading (masked client frames, fragments, UTF-8, size limits,
//! control frames) and writes what only it knows to write: its pongs and the close handshake.
//! Every other frame the server sends (replies, pushes, the shared `presence_state`,
//! `presence_diff` and broadcast bytes behind a channel's `join_ref` prefix, and pings) is
//! written here, with one vectored write of `[frame header, prefix, shared bytes]` per batch
//! of frames: no per-socket copy of a shared push and no buffer kept between writes
//! (tungstenite's write buffer keeps the largest size it ever reached, per socket, for good).
//!
//! Server frames are unmasked (RFC 6455, 5.1), so writing one is encoding its header
//! ([`FrameHead`]: FIN and opcode, then a 7-, 16- or 64-bit length, 5.2).
//!
//! **Order on the wire.** tungstenite writes through this stream too, so [`Wire`] orders the
//! two writers: whatever tungstenite writes goes out only after every frame queued here is
//! written whole (a pong never lands inside one of them), and the caller queues frames here
//! only after flushing tungstenite (its pending pongs and close go out first). A partial write
//! resumes where it stopped.

use crate::spare::Spares;
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The opcodes the server writes here (RFC 6455, 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpCode {
    /// A continuation fragment of a message.
    Continue = 0x0,
    /// A text message, or its first fragment.
    Text = 0x1,
    /// A ping (its payload at most 125 bytes).
    Ping = 0x9,
}

/// The longest frame header: 2 bytes and a 64-bit length.
const MAX_HEAD: usize = 10;

/// Bytes kept in place in front of a frame's body: its header, then a short prefix (a
/// channel's `join_ref` prefix, a ping's payload).
pub(crate) const LEAD: usize = 48;

/// The most a prefix kept in place may be.
pub(crate) const MAX_PREFIX: usize = LEAD - MAX_HEAD;

/// The most slices one vectored write takes (Linux takes up to 1,024).
const MAX_SLICES: usize = 64;

thread_local! {
    /// This thread's spare frame lists (`spare.rs`).
    static SPARE_FRAMES: RefCell<Spares<OutFrame>> = const { RefCell::new(Spares::new()) };
}

/// One frame's header, encoded (RFC 6455, 5.2): FIN and opcode, then the payload length in 7
/// bits, or 126 and 16 bits, or 127 and 64 bits, big-endian; unmasked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHead {
    bytes: [u8; MAX_HEAD],
    len: u8,
}

impl FrameHead {
    pub(crate) fn new(fin: bool, opcode: OpCode, payload_len: u64) -> Self {
        let mut bytes = [0; MAX_HEAD];
        bytes[0] = (u8::from(fin) << 7) | opcode as u8;
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(payload_len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&payload_len.to_be_bytes());
            10
        };
        FrameHead { bytes, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// One server frame ready to write: its header and a short prefix in place, then its body
/// (shared bytes or a slice of them, never copied).
#[derive(Clone, Debug)]
pub(crate) struct OutFrame {
    lead: [u8; LEAD],
    lead_len: u8,
    body: Bytes,
}

impl OutFrame {
    /// A frame whose payload is `prefix` then `body`. `prefix` is at most [`MAX_PREFIX`] bytes
    /// (a longer one is written in front of `body` in a copy: never for a usual `join_ref`).
    pub(crate) fn new(fin: bool, opcode: OpCode, prefix: &[u8], body: Bytes) -> Self {
        let head = FrameHead::new(fin, opcode, (prefix.len() + body.len()) as u64);
        let (prefix, body) = if prefix.len() <= MAX_PREFIX {
            (prefix, body)
        } else {
            let mut joined = Vec::with_capacity(prefix.len() + body.len());
            joined.extend_from_slice(prefix);
            joined.extend_from_slice(&body);
            (&[][..], Bytes::from(joined))
        };
        let mut lead = [0; LEAD];
        let head = head.as_bytes();
        lead[..head.len()].copy_from_slice(head);
        lead[head.len()..head.len() + prefix.len()].copy_from_slice(prefix);
        OutFrame { lead, lead_len: (head.len() + prefix.len()) as u8, body }
    }

    /// A ping carrying `payload` (at most 125 bytes; the flow window's pings carry 8).
    pub(crate) fn ping(payload: &[u8]) -> Self {
        debug_assert!(payload.len() <= 125, "a control frame's payload is at most 125 bytes");
        OutFrame::new(true, OpCode::Ping, &payload[..payload.len().min(125)], Bytes::new())
    }

    fn lead(&self) -> &[u8] {
        &self.lead[..self.lead_len as usize]
    }

    /// The frame's bytes on the wire.
    fn len(&self) -> usize {
        self.lead_len as usize + self.body.len()
    }

    /// The frame's bytes from `at` on, as at most two slices.
    fn slices_from(&self, at: usize) -> [&[u8]; 2] {
        let lead = self.lead();
        if at < lead.len() {
            [&lead[at..], &self.body]
        } else {
            [&[], &self.body[at - lead.len()..]]
        }
    }
}

/// The socket's stream under tungstenite (see the module documentation): reads pass through;
/// the frames queued with [`Wire::queue`] are written by [`Wire::poll_drain`], and every write
/// of tungstenite's waits until they are all written.
#[derive(Debug)]
pub(crate) struct Wire<S> {
    io: S,
    /// Frames to write, in order; the first one written up to `at`.
    frames: VecDeque<OutFrame>,
    at: usize,
}

impl<S> Wire<S> {
    pub(crate) fn new(io: S) -> Self {
        Wire { io, frames: VecDeque::new(), at: 0 }
    }

    /// Queue a frame. The caller has flushed tungstenite first (its bytes go before these).
    pub(crate) fn queue(&mut self, frame: OutFrame) {
        self.frames.push_back(frame);
    }

    /// Room for `frames` more frames, taken at once (a batch's frames queued one by one would
    /// regrow the queue at every doubling): a spare list of the thread's if there is none.
    pub(crate) fn reserve(&mut self, frames: usize) {
        if self.frames.capacity() == 0 {
            if let Ok(list) = SPARE_FRAMES.with(|s| s.try_borrow_mut().map(|mut s| s.take(frames))) {
                self.frames = list;
                return;
            }
        }
        self.frames.reserve(frames);
    }

    /// Whether every queued frame is written.
    #[cfg(test)]
    fn is_drained(&self) -> bool {
        self.frames.is_empty()
    }

    /// The bytes queued and not written yet.
    #[cfg(test)]
    fn unwritten(&self) -> usize {
        self.frames.iter().map(OutFrame::len).sum::<usize>() - self.at
    }

    /// `n` more bytes were written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.frames.front() else { return };
            let left = front.len() - self.at;
            if n < left {
                self.at += n;
                return;
            }
            n -= left;
            self.at = 0;
            self.frames.pop_front();
        }
    }
}

impl<S: AsyncWrite + Unpin> Wire<S> {
    /// Write every queued frame, a batch per vectored write; `Pending` while the socket takes
    /// no more (what was written so far stays written: the next call goes on from there).
    pub(crate) fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            let mut at = self.at;
            'frames: for frame in &self.frames {
                for part in frame.slices_from(at) {
                    if part.is_empty() {
                        continue;
                    }
                    if count == MAX_SLICES {
                        break 'frames;
                    }
                    slices[count] = IoSlice::new(part);
                    count += 1;
                }
                at = 0;
            }
            if count == 0 {
                // Only empty frames were left (none is: every frame has a header).
                self.frames.clear();
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        // An idle socket keeps no room: most sockets are idle most of the time. The list goes
        // to the thread's spares, for the next write.
        let list = std::mem::take(&mut self.frames);
        if list.capacity() > 0 {
            SPARE_FRAMES.with(|s| {
                if let Ok(mut spares) = s.try_borrow_mut() {
                    spares.give(list);
                }
            });
        }
        self.at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

/// tungstenite's writes: after the frames queued here.
impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let wire = self.get_mut();
        ready!(wire.poll_drain(cx))?;
        Pin::new(&mut wire.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let wire = self.get_mut();
        ready!(wire.poll_drain(cx))?;
        Pin::new(&mut wire.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let wire = self.get_mut();
        ready!(wire.poll_drain(cx))?;
        Pin::new(&mut wire.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let wire = self.get_mut();
        ready!(wire.poll_drain(cx))?;
        Pin::new(&mut wire.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode as WsOpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    /// The bytes of `frame` as written here, in one piece.
    fn bytes_of(frame: &OutFrame) -> Vec<u8> {
        frame.slices_from(0).concat()
    }

    #[test]
    fn frames_are_the_bytes_tungstenite_writes_for_them() {
        let cases =
            [(true, OpCode::Text, WsOpCode::Data(Data::Text)), (false, OpCode::Text, WsOpCode::Data(Data::Text))]
                .into_iter()
                .chain([(true, OpCode::Continue, WsOpCode::Data(Data::Continue))])
                .chain([(false, OpCode::Continue, WsOpCode::Data(Data::Continue))]);
        for (fin, ours, theirs) in cases {
            for len in [0, 1, 5, 124, 125, 126, 127, 4096, 65_535, 65_536, 70_000] {
                let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                let mut want = Vec::new();
                WsFrame::message(payload.clone(), theirs, fin).format(&mut want).unwrap();
                // Written with a prefix in place, with none, and with one past what is kept in place.
                for split in [0, len.min(3), len.min(MAX_PREFIX), len.min(MAX_PREFIX + 1)] {
                    let frame = OutFrame::new(fin, ours, &payload[..split], Bytes::copy_from_slice(&payload[split..]));
                    assert_eq!(bytes_of(&frame), want, "fin {fin}, {ours:?}, {len} bytes, prefix {split}");
                }
            }
        }
        for payload in [&[][..], &[1, 2, 3, 4, 5, 6, 7, 8], &[7; 125]] {
            let mut want = Vec::new();
            WsFrame::ping(payload.to_vec()).format(&mut want).unwrap();
            assert_eq!(bytes_of(&OutFrame::ping(payload)), want, "ping of {} bytes", payload.len());
        }
        assert_eq!(WsOpCode::Control(Control::Ping), WsOpCode::from(OpCode::Ping as u8));
    }

    /// A stream that takes at most `step` bytes per write, and refuses every other write
    /// (`Pending`, waking at once): every frame is written in pieces, across returns.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
        refuse: bool,
        writes: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let t = self.get_mut();
            t.refuse = !t.refuse;
            if t.refuse {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            t.writes += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(t.step - n);
                t.written.extend_from_slice(&b[..take]);
                n += take;
                if n == t.step {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_partial_write_resumes_where_it_stopped_and_a_write_of_tungstenites_waits_for_the_frames() {
        let frames = [
            OutFrame::new(true, OpCode::Text, b"[\"1\"", Bytes::from_static(b",null,\"t\",\"e\",{}]")),
            OutFrame::ping(&42u64.to_be_bytes()),
            OutFrame::new(false, OpCode::Text, b"", Bytes::from(vec![b'x'; 300])),
            OutFrame::new(true, OpCode::Continue, b"", Bytes::from(vec![b'y'; 70_000])),
        ];
        let want: Vec<u8> = frames.iter().flat_map(bytes_of).collect();
        for step in [1, 7, 64, 1000, 100_000] {
            let mut wire = Wire::new(Trickle { written: Vec::new(), step, refuse: false, writes: 0 });
            for f in &frames {
                wire.queue(f.clone());
            }
            assert_eq!(wire.unwritten(), want.len());
            // A write of tungstenite's (a pong) while the frames are half written: after them.
            let pong = [0x8a, 0x01, b'p'];
            let mut pong_written = 0;
            std::future::poll_fn(|cx| {
                while pong_written < pong.len() {
                    pong_written += ready!(Pin::new(&mut wire).poll_write(cx, &pong[pong_written..]))?;
                }
                Poll::Ready(Ok::<(), io::Error>(()))
            })
            .await
            .unwrap();
            assert!(wire.is_drained(), "step {step}");
            let mut expected = want.clone();
            expected.extend_from_slice(&pong);
            assert_eq!(wire.io.written, expected, "step {step}");
            if step == 100_000 {
                assert_eq!(wire.io.writes, 2, "one vectored write for the four frames, one for the pong");
            }
        }
    }

    #[tokio::test]
    async fn a_drained_wire_gives_its_list_to_the_threads_spares_and_the_next_write_takes_it() {
        let kept = || SPARE_FRAMES.with(|s| s.borrow().kept());
        let mut wire = Wire::new(Trickle { written: Vec::new(), step: 7, refuse: false, writes: 0 });
        wire.reserve(3);
        let room = wire.frames.capacity();
        for n in 0..3u64 {
            wire.queue(OutFrame::ping(&n.to_be_bytes()));
        }
        assert_eq!(kept(), 0);
        std::future::poll_fn(|cx| wire.poll_drain(cx)).await.unwrap();
        assert_eq!(wire.io.written.len(), 3 * 10, "three pings written whole");
        assert_eq!((wire.frames.capacity(), kept()), (0, 1), "the idle socket keeps no room");
        wire.reserve(2);
        assert_eq!((wire.frames.capacity(), kept()), (room, 0), "the same list, no new one");
    }

    #[tokio::test]
    async fn a_tungstenite_client_reads_fragments_and_pings_and_gets_its_pong_and_close_after_them() {
        // A pipe of 37 bytes: every write of the server is partial and waits for the client.
        let (server_io, client_io) = tokio::io::duplex(37);
        let mut server = WebSocketStream::from_raw_socket(Wire::new(server_io), Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let big: String = (0..10_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let client_side = tokio::spawn(async move {
            client.send(Message::Ping(Bytes::from_static(b"c1"))).await.unwrap();
            let mut got = Vec::new();
            while let Some(msg) = client.next().await {
                let msg = msg.unwrap();
                let end = matches!(msg, Message::Close(_));
                got.push(msg);
                if end {
                    break;
                }
            }
            // The client answers the close; the server reads the answer.
            while client.next().await.is_some() {}
            got
        });
        {
            let wire = server.get_mut();
            wire.queue(OutFrame::new(true, OpCode::Text, b"", Bytes::from_static(b"hello")));
            wire.queue(OutFrame::new(false, OpCode::Text, b"[\"7\"", Bytes::copy_from_slice(&big.as_bytes()[..4000])));
            wire.queue(OutFrame::ping(&4004u64.to_be_bytes()));
            wire.queue(OutFrame::new(
                false,
                OpCode::Continue,
                b"",
                Bytes::copy_from_slice(&big.as_bytes()[4000..8000]),
            ));
            wire.queue(OutFrame::new(true, OpCode::Continue, b"", Bytes::copy_from_slice(&big.as_bytes()[8000..])));
        }
        // Drain while reading, as the socket task does: the client's ping is read mid-write.
        let mut read = Vec::new();
        std::future::poll_fn(|cx| loop {
            if server.get_mut().poll_drain(cx).is_ready() {
                return Poll::Ready(());
            }
            match server.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(m))) => read.push(m),
                Poll::Ready(other) => panic!("read {other:?}"),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
        let close = CloseFrame { code: 1013.into(), reason: "slow".into() };
        server.send(Message::Close(Some(close.clone()))).await.unwrap();
        while let Some(Ok(m)) = server.next().await {
            read.push(m);
        }
        // The client's ping, read while the frames were written; its answer to the server's
        // ping (once it read the frames before it); its answer to the close.
        let pong = Message::Pong(Bytes::copy_from_slice(&4004u64.to_be_bytes()));
        assert_eq!(read, [Message::Ping(Bytes::from_static(b"c1")), pong, Message::Close(Some(close.clone()))]);
        // The server ends the TCP connection (here: the pipe) once the handshake is done.
        drop(server);
        let got = client_side.await.unwrap();
        let mut text = String::from("[\"7\"");
        text.push_str(&big);
        assert_eq!(
            got,
            [
                Message::text("hello"),
                Message::Ping(Bytes::copy_from_slice(&4004u64.to_be_bytes())),
                Message::text(text),
                Message::Pong(Bytes::from_static(b"c1")),
                Message::Close(Some(close)),
            ]
        );
    }
}
