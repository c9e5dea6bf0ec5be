//! The smallest HTTP/1.1 client `roster status` needs: one blocking `GET` over plain TCP,
//! `Connection: close`, body by `Content-Length`, chunks, or end of stream.
//!
//! Not `ureq`: its URL parsing pulls in two dozen Unicode crates for what is a loopback GET
//! of a JSON document.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A response: status code and body (as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The body, decoded from chunks if need be.
    pub body: String,
}

/// The largest body read, so a confused peer cannot exhaust memory.
const MAX_BODY_BYTES: u64 = 16 << 20;

/// `GET path` from `addr` (`HOST:PORT`), with `Authorization: Bearer <bearer>` when given;
/// `timeout` bounds the connect and each read and write.
pub(crate) fn get(addr: &str, path: &str, bearer: Option<&str>, timeout: Duration) -> io::Result<HttpResponse> {
    let mut last_err = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address"));
    let mut stream = None;
    for sock in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sock, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = e,
        }
    }
    let stream = stream.ok_or(last_err)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let auth = bearer.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    (&stream).write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )?;
    read_response(BufReader::new(stream))
}

fn read_response(mut reader: impl BufRead) -> io::Result<HttpResponse> {
    let status_line = read_line(&mut reader)?;
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad(format!("not an HTTP/1.x status line: {status_line:?}")))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let line = read_line(&mut reader)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().map_err(|_| bad(format!("bad Content-Length {value:?}")))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        read_chunked(&mut reader)?
    } else {
        let limit = length.unwrap_or(MAX_BODY_BYTES).min(MAX_BODY_BYTES);
        let mut body = Vec::new();
        reader.take(limit).read_to_end(&mut body)?;
        body
    };
    let body = String::from_utf8(body).map_err(|_| bad("body is not UTF-8".to_owned()))?;
    Ok(HttpResponse { status, body })
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?;
        let size = size_line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
        if size == 0 {
            return Ok(body);
        }
        if body.len() as u64 + size > MAX_BODY_BYTES {
            return Err(bad("body too large".to_owned()));
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        reader.read_exact(&mut body[start..])?;
        read_line(reader)?; // the CRLF after each chunk
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.by_ref().take(64 * 1024).read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-response"));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> io::Result<HttpResponse> {
        read_response(raw.as_bytes())
    }

    #[test]
    fn body_is_read_by_content_length() {
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing").unwrap();
        assert_eq!(r, HttpResponse { status: 200, body: "{}".to_owned() });
    }

    #[test]
    fn body_without_length_is_read_to_the_end() {
        let r = parse("HTTP/1.0 503 Service Unavailable\r\nX: y\r\n\r\nnot ready").unwrap();
        assert_eq!(r, HttpResponse { status: 503, body: "not ready".to_owned() });
    }

    #[test]
    fn chunked_body_is_reassembled() {
        let raw = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse(raw).unwrap().body, r#"{"a":1}"#);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for raw in ["", "SSH-2.0-OpenSSH\r\n", "HTTP/1.1 2\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"] {
            assert!(parse(raw).is_err(), "{raw:?}");
        }
        let truncated = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nabc";
        assert!(parse(truncated).is_err());
    }
}
