//! Tcp mode: each connection is joined to one connection to the backend that is current when
//! it arrives, and counted in flight until both sides have ended.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::Shared;

/// Carries one client connection to the current backend of `listen`.
pub async fn serve(shared: &Shared, listen: SocketAddr, mut client: TcpStream) {
    let Some(flight) = shared.table.enter(listen) else {
        return;
    };
    let backend = flight.backend();
    let connecting = tokio::time::timeout(shared.connect_timeout, TcpStream::connect(backend));
    let connected = tokio::select! {
        connected = connecting => connected,
        () = flight.cut().cancelled() => return,
    };
    let mut server = match connected {
        Ok(Ok(server)) => server,
        Ok(Err(err)) => {
            shared
                .connect_failures
                .warn(|| format!("{listen}: cannot connect to {backend}: {err}"));
            return;
        }
        Err(_) => {
            shared.connect_failures.warn(|| {
                format!(
                    "{listen}: cannot connect to {backend}: no answer in {}",
                    humantime::format_duration(shared.connect_timeout)
                )
            });
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut server) => match copied {
            Ok((up, down)) => tracing::trace!(%listen, %backend, up, down, "connection ended"),
            Err(err) => tracing::debug!(%listen, %backend, "connection ended: {err}"),
        },
        () = flight.cut().cancelled() => {
            tracing::debug!(%listen, %backend, "connection cut by a drain");
        }
    }
}
