//! The node's `GET /presence`, read by the coordinator over one HTTP/1.1 connection kept
//! alive between requests (hyper's client connection on a small runtime of its own).
//!
//! The settle loop reads a topic's list every poll once its views agree; the testkit's
//! `http_get` opens a connection per request (`Connection: close`), which cost the node about
//! 7 % of its CPU in the measured runs: a TCP handshake, a new hyper connection task and its
//! buffers each time. A connection the node has closed (an idle timeout, a restart) is
//! replaced once per request.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// How long one request may take, connect included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `GET` requests to one node over a kept-alive connection.
pub(crate) struct NodeApi {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    bearer: Option<String>,
    connection: Option<SendRequest<Empty<Bytes>>>,
    /// Connections opened so far.
    pub(crate) connections: u64,
}

impl NodeApi {
    pub(crate) fn new(addr: SocketAddr, bearer: Option<String>) -> std::io::Result<NodeApi> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(NodeApi { runtime, addr, bearer, connection: None, connections: 0 })
    }

    /// `GET path`: `(status, body)`. A failure on a connection used before is retried once
    /// on a new one (the node may have closed it while idle).
    pub(crate) fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        let reused = self.connection.is_some();
        match self.try_get(path) {
            Err(_) if reused => {
                self.connection = None;
                self.try_get(path)
            }
            result => result,
        }
    }

    fn try_get(&mut self, path: &str) -> Result<(u16, String), String> {
        let mut request = hyper::Request::get(path).header(hyper::header::HOST, self.addr.to_string());
        if let Some(key) = &self.bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let (addr, mut connection) = (self.addr, self.connection.take());
        let result = self.runtime.block_on(async {
            tokio::time::timeout(TIMEOUT, async {
                let mut opened = false;
                let mut sender = match connection.take() {
                    Some(sender) if !sender.is_closed() => sender,
                    _ => {
                        opened = true;
                        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                        let _ = stream.set_nodelay(true);
                        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .map_err(|e| e.to_string())?;
                        // Driven while the runtime runs, which is during each request.
                        tokio::spawn(conn);
                        sender
                    }
                };
                sender.ready().await.map_err(|e| e.to_string())?;
                let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                Ok::<_, String>((sender, opened, status, String::from_utf8_lossy(&body).into_owned()))
            })
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()))
        });
        let (sender, opened, status, body) = result?;
        self.connections += u64::from(opened);
        self.connection = Some(sender);
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A server that answers every request on a connection with its count so far, and
    /// closes a connection after `per_connection` requests; returns the connections accepted.
    fn serve(listener: TcpListener, per_connection: usize, total: usize) -> std::thread::JoinHandle<Vec<String>> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut answered = 0;
            while answered < total {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                for _ in 0..per_connection {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap() == 0 {
                            break;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if head.is_empty() {
                        break;
                    }
                    seen.push(
                        head.lines().next().unwrap().to_owned()
                            + " "
                            + &head.contains("authorization: Bearer k").to_string(),
                    );
                    answered += 1;
                    let body = answered.to_string();
                    write!(writer, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
                    if answered == total {
                        break;
                    }
                }
            }
            seen
        })
    }

    #[test]
    fn requests_share_one_connection_and_a_closed_one_is_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Three requests per connection, then the server drops it: five requests need two.
        let server = serve(listener, 3, 5);
        let mut api = NodeApi::new(addr, Some("k".into())).unwrap();
        let bodies: Vec<String> = (0..5).map(|i| api.get(&format!("/presence?topic=t{i}")).unwrap().1).collect();
        assert_eq!(bodies, ["1", "2", "3", "4", "5"]);
        assert_eq!(api.connections, 2);
        let seen = server.join().unwrap();
        assert_eq!(seen[0], "GET /presence?topic=t0 HTTP/1.1 true");
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn a_node_that_is_not_there_is_an_error() {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut api = NodeApi::new(addr, None).unwrap();
        assert!(api.get("/presence").is_err());
    }
}
