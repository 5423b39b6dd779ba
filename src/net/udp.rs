//! UDP sockets for QUIC endpoints, with socket buffers sized for bursts.
//!
//! Linux gives a UDP socket about 208 KiB of receive buffer by default
//! (`net.core.rmem_default`). A node's endpoint carries every peer's and
//! client's traffic on one socket; when its thread is held up for a few
//! milliseconds (a busy CPU) while answers arrive from every peer, the
//! kernel drops what does not fit, and QUIC takes the drops for
//! congestion: it retransmits and shrinks its congestion window. Measured
//! on the YCSB benchmark (3 nodes on one machine): about a hundred
//! datagrams dropped per run with the default buffers, around the load's
//! first memtable flushes. Every endpoint therefore asks for
//! [`SOCKET_BUFFER_BYTES`] each way; the kernel grants at most
//! `net.core.rmem_max` / `wmem_max` (4 MiB on common distributions;
//! without privileges a socket cannot get more), and less is not an error.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

/// Receive and send buffer asked for on every endpoint's socket.
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// A UDP socket bound to `addr` with [`SOCKET_BUFFER_BYTES`] asked for
/// each way (what the kernel grants may be less).
pub fn bind_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Same as the standard library's default for a v6 bind.
        let _ = socket.set_only_v6(false);
    }
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)),
    ] {
        if let Err(error) = result {
            tracing::debug!(%error, what, "UDP socket buffer left at the system default");
        }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A quinn endpoint on [`bind_socket`]`(addr)`: a server if
/// `server_config` is given, else a client only. Must be called inside a
/// tokio runtime.
pub fn endpoint(
    addr: SocketAddr,
    server_config: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    let runtime: Arc<dyn quinn::Runtime> = quinn::default_runtime()
        .ok_or_else(|| io::Error::other("no async runtime for the QUIC endpoint"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server_config,
        bind_socket(addr)?,
        runtime,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receive and send buffer sizes the kernel gave `socket` (Linux
    /// reports twice what was granted, to account for its bookkeeping).
    fn buffer_sizes(socket: &std::net::UdpSocket) -> io::Result<(usize, usize)> {
        let socket = socket2::SockRef::from(socket);
        Ok((socket.recv_buffer_size()?, socket.send_buffer_size()?))
    }

    #[test]
    fn sockets_get_bigger_buffers_than_the_default() {
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tuned = bind_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let (plain_recv, plain_send) = buffer_sizes(&plain).unwrap();
        let (recv, send) = buffer_sizes(&tuned).unwrap();
        // The kernel caps what it grants (rmem_max / wmem_max), so ask only
        // that the tuned socket got no less than a default one, and more
        // wherever the cap allows more than the default.
        assert!(recv >= plain_recv && send >= plain_send);
        let cap = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
        };
        if let Some(rmem_max) = cap("/proc/sys/net/core/rmem_max") {
            if rmem_max * 2 > plain_recv {
                assert!(
                    recv > plain_recv,
                    "{recv} <= {plain_recv}, rmem_max {rmem_max}"
                );
            }
        }
        assert!(tuned.local_addr().unwrap().port() != 0);
    }
}
