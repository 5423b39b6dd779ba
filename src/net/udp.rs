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
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};
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

/// Largest UDP payload an endpoint accepts from its peers, and the largest
/// packet MTU discovery ([`crate::net::quic::tune_transport`]) looks for.
///
/// quinn's defaults stop at 1452 bytes, Ethernet's MTU. Loopback (`ringdb
/// dev`, the tests, the benchmarks) carries 64 KiB and data-centre links
/// often 9000-byte jumbo frames; packets as big as the path allows carry
/// several answers each where a 1 KB row nearly fills a 1452-byte packet
/// (docs/performance.md, "Bigger QUIC packets": on YCSB half the datagrams
/// per operation on 1 node, 0.75 -> 0.47 per insert on 3). Discovery
/// starts at QUIC's 1200 bytes and probes upward, so a path with a smaller
/// MTU just stops the search earlier.
///
/// Why not bigger: quinn hands the kernel up to
/// [`QUINN_MAX_TRANSMIT_SEGMENTS`] packets in one segmentation-offload
/// (GSO) send, and Linux refuses a send over 65,507 bytes of UDP payload
/// (`EMSGSIZE`), which quinn counts as sent: the whole batch is lost and
/// waits for QUIC's loss detection. With 16 KiB packets every burst of
/// ten packets stalled its connection for 50-150 ms. So ten packets of
/// this size must fit in one send.
pub const MAX_UDP_PAYLOAD: u16 = (MAX_GSO_SEND_PAYLOAD / QUINN_MAX_TRANSMIT_SEGMENTS) as u16;

/// The most packets quinn puts in one GSO send (`MAX_TRANSMIT_SEGMENTS` in
/// quinn's `connection.rs`, private there). `tests/net_quic.rs` sends a
/// burst and checks that no packet was lost, which fails if quinn raises
/// it past what [`MAX_UDP_PAYLOAD`] allows.
pub const QUINN_MAX_TRANSMIT_SEGMENTS: usize = 10;

/// Most UDP payload bytes Linux takes in one send, segmented or not:
/// 65,535 bytes of IPv4 datagram less its 20-byte header and the 8-byte
/// UDP header (IPv6 allows 20 bytes more).
const MAX_GSO_SEND_PAYLOAD: usize = 65_535 - 20 - 8;

/// A quinn endpoint on [`bind_socket`]`(addr)`: a server if
/// `server_config` is given, else a client only; it accepts packets up to
/// [`MAX_UDP_PAYLOAD`]. A server's `restart_keys` should outlive the
/// process (see [`super::tls::RestartKeys`]); `None` takes quinn's random
/// ones. Must be called inside a tokio runtime.
pub fn endpoint(
    addr: SocketAddr,
    server_config: Option<quinn::ServerConfig>,
    restart_keys: Option<&super::tls::RestartKeys>,
) -> io::Result<quinn::Endpoint> {
    let runtime: Arc<dyn quinn::Runtime> = quinn::default_runtime()
        .ok_or_else(|| io::Error::other("no async runtime for the QUIC endpoint"))?;
    let mut config = endpoint_config()?;
    if let Some(keys) = restart_keys {
        keys.apply(&mut config);
    }
    quinn::Endpoint::new(config, server_config, bind_socket(addr)?, runtime)
}

/// quinn's endpoint configuration with [`MAX_UDP_PAYLOAD`].
fn endpoint_config() -> io::Result<quinn::EndpointConfig> {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(config)
}

/// The range the kernel hands out ports from when a socket binds port 0
/// (`net.ipv4.ip_local_port_range`; the Linux default if it cannot be read).
fn ephemeral_port_range() -> RangeInclusive<u16> {
    let read = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(|part| part.parse::<u16>());
            match (bounds.next(), bounds.next()) {
                (Some(Ok(low)), Some(Ok(high))) if low <= high => Some(low..=high),
                _ => None,
            }
        });
    read.unwrap_or(32768..=60999)
}

/// Where [`pick_free_local_ports`] looks next (an offset into its range).
static NEXT_PORT_OFFSET: AtomicU32 = AtomicU32::new(u32::MAX);

/// `count` distinct UDP ports on 127.0.0.1 that nothing is bound to, for
/// local clusters and tests that must know a node's address before it
/// starts.
///
/// Asking the kernel for port 0 and then releasing it races with every
/// other socket that binds port 0 (QUIC client endpoints do): the kernel
/// may hand the same number to one of them before the node binds it. So
/// the ports come from below the ephemeral range, where no port-0 bind
/// lands; each candidate is checked by binding it, and this process never
/// hands out the same port twice (it walks the range from an offset
/// derived from its process id, so concurrent processes start apart).
pub fn pick_free_local_ports(count: usize) -> io::Result<Vec<u16>> {
    let ephemeral = ephemeral_port_range();
    // Ports in [floor, ceiling): under the ephemeral range, above the
    // well-known ports; fall back to 0-binds when there is no such room.
    let floor: u32 = 10_000;
    let ceiling = u32::from(*ephemeral.start());
    if ceiling < floor + 1_000 {
        return pick_by_binding_port_zero(count);
    }
    let span = ceiling - floor;
    let _ = NEXT_PORT_OFFSET.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut held = Vec::with_capacity(count);
    let mut tried = 0;
    while held.len() < count {
        if tried >= span {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("no free UDP port on 127.0.0.1 between {floor} and {ceiling}"),
            ));
        }
        tried += 1;
        let offset = NEXT_PORT_OFFSET.fetch_add(1, Ordering::Relaxed) % span;
        let Ok(port) = u16::try_from(floor + offset) else {
            continue;
        };
        if let Ok(socket) = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port))) {
            held.push(socket);
        }
    }
    held.iter()
        .map(|socket| socket.local_addr().map(|addr| addr.port()))
        .collect()
}

/// `count` distinct ports the kernel picked (port-0 binds, all held until
/// every one is picked).
fn pick_by_binding_port_zero(count: usize) -> io::Result<Vec<u16>> {
    let held = (0..count)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    held.iter()
        .map(|socket| socket.local_addr().map(|addr| addr.port()))
        .collect()
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

    #[test]
    fn picked_ports_are_distinct_free_and_outside_the_ephemeral_range() {
        let ephemeral = ephemeral_port_range();
        let mut seen = std::collections::HashSet::new();
        for round in 0..20 {
            let ports = pick_free_local_ports(8).unwrap();
            assert_eq!(ports.len(), 8);
            for port in ports {
                assert!(
                    seen.insert(port),
                    "port {port} handed out twice (round {round})"
                );
                if *ephemeral.start() >= 11_000 {
                    assert!(!ephemeral.contains(&port), "{port} is in {ephemeral:?}");
                }
                // Free right after picking: the caller can bind it.
                std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
            }
        }

        // A port in use is never picked: hold the next few candidates (in
        // this test, so no other test's picks race with the holding).
        let probe = pick_free_local_ports(1).unwrap()[0];
        let held: Vec<_> = (1..=4u16)
            .filter_map(|step| {
                std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], probe + step))).ok()
            })
            .collect();
        let held_ports: Vec<u16> = held
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        for port in pick_free_local_ports(6).unwrap() {
            assert!(!held_ports.contains(&port), "{port} is held by this test");
        }
    }
}
