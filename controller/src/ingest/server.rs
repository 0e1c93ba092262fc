//! The listener: TCP, then (unless `--insecure`) a rustls handshake we run ourselves, so a
//! refused certificate is logged with its reason at WARN rather than lost at tonic's DEBUG.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::select_all;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Server;

use super::error::ServeError;
use super::service::LinkService;
use super::sink::FindingSink;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the gRPC server to pick them up.
const ACCEPTED_QUEUE: usize = 1_024;
/// TLS handshakes under way at once, per listener. A connection arriving while this many are
/// pending is closed at once (the agent retries with backoff): a flood of clients that never
/// finish their handshake costs bounded memory and cannot starve the agents for long.
pub const PENDING_HANDSHAKES: usize = 512;

/// Binds `addr` (resolving nothing but an IP:port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// Serves the Link service on `listener` until `shutdown` resolves.
///
/// `tls` is the server config from [`crate::pki::server_config`], which requires and verifies
/// client certificates; `None` is plain text (`--insecure`).
pub async fn serve<S: FindingSink>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: LinkService<S>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_all(vec![listener], tls, service, shutdown).await
}

/// Serves one Link service on every listener (e.g. one address per veth of a fleet) until
/// `shutdown` resolves: their connections feed the same gRPC server, so a host is one host
/// whichever address it reaches. With no listener it returns at once.
pub async fn serve_all<S: FindingSink>(
    listeners: Vec<TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: LinkService<S>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let server = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(service.into_server());
    match tls {
        None => {
            let incoming = select_all(listeners.into_iter().map(TcpListenerStream::new));
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
                .map_err(ServeError::Transport)
        }
        Some(config) => {
            let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
            let acceptor = TlsAcceptor::from(config);
            let acceptors: Vec<_> = listeners
                .into_iter()
                .map(|listener| tokio::spawn(accept_tls(listener, acceptor.clone(), tx.clone())))
                .collect();
            // Only the acceptors hold senders: the stream ends if they all stop.
            drop(tx);
            let served = server
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
                .await
                .map_err(ServeError::Transport);
            for acceptor in acceptors {
                acceptor.abort();
            }
            served
        }
    }
}

type Accepted = Result<TlsStream<TcpStream>, std::io::Error>;

async fn accept_tls(listener: TcpListener, acceptor: TlsAcceptor, tx: mpsc::Sender<Accepted>) {
    let pending = Arc::new(tokio::sync::Semaphore::new(PENDING_HANDSHAKES));
    let mut shed: u64 = 0;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "Accepting a connection failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&pending).try_acquire_owned() else {
            shed += 1;
            if shed.is_power_of_two() {
                tracing::warn!(peer = %peer, pending = PENDING_HANDSHAKES, shed, "Too many TLS handshakes under way; closed a new connection.");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send(Ok(stream)).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(peer = %peer, reason = %e, "TLS handshake refused.");
                }
                Err(_) => {
                    tracing::warn!(peer = %peer, reason = "handshake timed out", "TLS handshake refused.");
                }
            }
        });
    }
}
