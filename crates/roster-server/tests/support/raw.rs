//! Raw TCP for what no well-behaved client does: connections that send nothing, headers sent a
//! line at a time, bodies a byte at a time, WebSocket frames written by hand, connections from
//! another loopback address (127.0.0.2, ...: every 127.0.0.0/8 address is this host).

#![allow(dead_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connect to `addr` (`127.0.0.1:PORT`) from `from` (a loopback address), or from the default.
pub async fn connect(addr: &str, from: Option<IpAddr>) -> TcpStream {
    let addr: SocketAddr = addr.parse().expect("an IP:PORT address");
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    }
    socket.connect(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Everything the server sends until it closes the connection; `Err` if it is still open after
/// `timeout` (then with what came so far). A reset counts as closed.
pub async fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(()) => Ok(got),
        Err(_) => Err(got),
    }
}

/// Write `bytes` one chunk at a time, `every` apart, until the server closes the connection or
/// `bytes` runs out. Returns how many chunks were written.
pub async fn trickle(stream: &mut TcpStream, chunks: &[&[u8]], every: Duration) -> usize {
    for (i, chunk) in chunks.iter().enumerate() {
        if stream.write_all(chunk).await.is_err() {
            return i;
        }
        tokio::time::sleep(every).await;
    }
    chunks.len()
}

/// Send `GET path` on `stream` and read its response (head and `content-length` body), leaving
/// the connection open (HTTP/1.1 keep-alive). Returns the response; empty if the server closed
/// the connection first.
pub async fn get_keep_alive(stream: &mut TcpStream, host: &str, path: &str) -> Vec<u8> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
            let body_len = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= i + 4 + body_len {
                return got;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .unwrap_or(0);
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// The WebSocket upgrade of `/socket/websocket?vsn=2.0.0&token=TOKEN` on `stream`; panics
/// unless it is answered 101. Returns what came after the response head.
pub async fn ws_upgrade(stream: &mut TcpStream, host: &str, token: &str) -> Vec<u8> {
    let request = format!(
        "GET /socket/websocket?vsn=2.0.0&token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send the upgrade");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an upgrade response within 5 s")
            .expect("read the upgrade response");
        assert!(n > 0, "closed during the upgrade: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    got.split_off(head_end)
}

/// The header of a masked client frame with opcode `opcode` (1: text) announcing `len` payload
/// bytes, with a zero mask.
pub fn client_frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut header = vec![0x80 | opcode];
    match len {
        0..=125 => header.push(0x80 | len as u8),
        126..=0xFFFF => {
            header.push(0x80 | 126);
            header.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            header.push(0x80 | 127);
            header.extend_from_slice(&len.to_be_bytes());
        }
    }
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

/// The code of the first close frame among the server's (unmasked) frames in `bytes`.
pub fn close_code(bytes: &[u8]) -> Option<u16> {
    let mut rest = bytes;
    while rest.len() >= 2 {
        let opcode = rest[0] & 0x0F;
        let (len, header) = match rest[1] & 0x7F {
            126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 if rest.len() >= 10 => (u64::from_be_bytes(rest[2..10].try_into().ok()?) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        let payload = rest.get(header..header + len)?;
        if opcode == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
        rest = &rest[header + len..];
    }
    None
}

/// The status code of an HTTP response's first line, if `bytes` begin with one.
pub fn http_status(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// A loopback address other than 127.0.0.1 (this host, another client as the server sees it).
pub fn loopback(last: u8) -> Option<IpAddr> {
    Some(IpAddr::from([127, 0, 0, last]))
}

/// Write, ignoring a connection the server already closed.
pub async fn send(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await
}
