//! A webhook receiver on loopback, for the controller's `--escalate-webhook`: every POST body,
//! as JSON, in arrival order — the pages a human would get.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A body larger than this is not a page; the receiver drops the connection.
const MAX_BODY: usize = 1 << 20;

/// The receiver; stops when dropped.
#[derive(Debug)]
pub struct Webhook {
    addr: SocketAddr,
    posts: Arc<Mutex<Vec<serde_json::Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    /// Listens on 127.0.0.1, on a free port.
    pub fn start() -> std::io::Result<Webhook> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let posts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, out) = (Arc::clone(&stop), Arc::clone(&posts));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        // One POST per connection (the answer says `connection: close`); a
                        // body that is not JSON is kept as a string, so nothing vanishes.
                        if let Some(body) = receive(stream) {
                            let value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                                serde_json::Value::String(
                                    String::from_utf8_lossy(&body).into_owned(),
                                )
                            });
                            out.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(value);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Webhook {
            addr,
            posts,
            stop,
            thread: Some(thread),
        })
    }

    /// The URL to give the controller.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every POST so far, in arrival order.
    pub fn posts(&self) -> Vec<serde_json::Value> {
        self.posts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The POSTs whose `event` is `event` (`page`, `renotify`, `resolved`).
    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.posts()
            .into_iter()
            .filter(|p| p["event"] == event)
            .collect()
    }

    /// Waits until `done` holds for the POSTs so far; returns them, or `None` at the deadline.
    pub fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Option<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let posts = self.posts();
            if done(&posts) {
                return Some(posts);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request's body and answers 200.
fn receive(stream: TcpStream) -> Option<Vec<u8>> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    if length > MAX_BODY {
        return None;
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = reader.into_inner();
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .ok()?;
    Some(body)
}
