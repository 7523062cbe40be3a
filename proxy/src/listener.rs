//! The proxy's listening sockets: bound fresh, or inherited from systemd (socket activation,
//! or the file-descriptor store across a restart); and the loop that accepts on one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use brine_common::proxy_control::ProxyMode;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// Connections the kernel queues while the proxy does not accept (during a restart, say).
const BACKLOG: u32 = 1024;

/// Binds `listen` as Docker would: address reuse on, so connections of a previous owner in
/// `TIME_WAIT` do not keep the port.
pub fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    socket.listen(BACKLOG)
}

/// Turns an inherited listener into the runtime's.
pub fn adopt(listener: std::net::TcpListener) -> std::io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// The TCP listeners this process inherited (`LISTEN_FDS`), by the address each listens on.
pub fn inherited() -> HashMap<SocketAddr, std::net::TcpListener> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = HashMap::new();
    for index in 0..fds.len() {
        match fds.take_tcp_listener(index) {
            Ok(Some(listener)) => match listener.local_addr() {
                Ok(address) => {
                    tracing::debug!(%address, "inherited a listening socket");
                    listeners.insert(address, listener);
                }
                Err(err) => tracing::warn!("inherited socket {index} has no address: {err}"),
            },
            Ok(None) => {}
            Err(err) => tracing::warn!("inherited socket {index} is not a TCP listener: {err}"),
        }
    }
    listeners
}

/// Accepts connections on `listener` until `stop`, at most `max_connections` open at once,
/// each served in the mode its route has when it arrives.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listen: SocketAddr,
    listener: TcpListener,
    max_connections: usize,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, say: try again in a moment, not in a busy loop.
                    shared.accept_failures.warn(|| format!("cannot accept on {listen}: {err}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(mode) = shared.table.mode(listen) else {
            continue;
        };
        let shared = Arc::clone(&shared);
        let connection_stop = stop.clone();
        shared.tracker.clone().spawn(async move {
            let _permit = permit;
            match mode {
                ProxyMode::Tcp => crate::tcp::serve(&shared, listen, stream).await,
                ProxyMode::Http => {
                    crate::http::serve(shared, listen, stream, peer, connection_stop).await;
                }
            }
        });
    }
    tracing::debug!(%listen, "stopped accepting");
}
