//! CPU time of the benchmark's processes, from `/proc`: how many server
//! CPU seconds an operation costs ("per core" throughput), how much the
//! load generator itself used, and how busy the rest of the machine was.
//! Also the machine's UDP datagram counters (`/proc/net/snmp`), so every
//! phase shows how many datagrams an operation cost (QUIC runs on UDP).

use crate::cli::bench::workload::parse_proc_stat;
use std::time::{Duration, Instant};

/// CPU counters at one moment, in clock ticks.
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: Instant,
    /// (busy, total) ticks of all CPUs of the machine, if readable.
    machine: Option<(u64, u64)>,
    /// Ticks the hypervisor ran something else while this machine's
    /// virtual CPUs wanted to run (`steal`; part of `busy`).
    steal: Option<u64>,
    /// utime + stime of this process (the load generator).
    client: Option<u64>,
    /// utime + stime of each server process, `None` for one that could not
    /// be read (exited, or not on Linux).
    servers: Vec<Option<u64>>,
    /// The machine's (network namespace's) UDP `InDatagrams` and
    /// `OutDatagrams`, if readable.
    udp: Option<UdpCounters>,
}

/// UDP datagram counters of `/proc/net/snmp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams delivered to sockets (`InDatagrams`).
    pub received: u64,
    /// Datagrams sent (`OutDatagrams`).
    pub sent: u64,
}

/// CPU used between two samples, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUsage {
    /// Wall-clock time between the samples.
    pub wall: f64,
    /// CPU seconds of every server process together (`None` when a server
    /// could not be read, or none was given).
    pub servers: Option<f64>,
    /// CPU seconds of the load generator.
    pub client: Option<f64>,
    /// CPU seconds of every other process of the machine (steal not
    /// included).
    pub others: Option<f64>,
    /// CPU seconds the hypervisor took from this virtual machine while it
    /// wanted to run (`steal` of `/proc/stat`): time no process here got.
    pub steal: Option<f64>,
    /// CPU seconds the machine had (wall time x CPUs).
    pub machine: Option<f64>,
    /// UDP datagrams the machine received and sent between the samples
    /// (every process: on a quiet machine, the cluster and the load
    /// generator; over loopback each datagram counts once each way).
    pub udp: Option<UdpCounters>,
}

impl CpuUsage {
    /// Operations per server CPU second: throughput per busy core.
    pub fn ops_per_server_cpu_second(&self, ops: u64) -> Option<f64> {
        self.servers.filter(|s| *s > 0.0).map(|s| ops as f64 / s)
    }

    /// UDP datagrams sent per operation: the network cost of an operation,
    /// requests, responses and acknowledgements together.
    pub fn udp_sent_per_op(&self, ops: u64) -> Option<f64> {
        self.udp
            .filter(|_| ops > 0)
            .map(|u| u.sent as f64 / ops as f64)
    }

    /// UDP datagrams received per operation (equal to the sent ones over
    /// loopback unless some were dropped).
    pub fn udp_received_per_op(&self, ops: u64) -> Option<f64> {
        self.udp
            .filter(|_| ops > 0)
            .map(|u| u.received as f64 / ops as f64)
    }

    /// Share (0..=1) of the machine's CPU time other processes used.
    pub fn others_share(&self) -> Option<f64> {
        share(self.others, self.machine)
    }

    /// Share (0..=1) of the machine's CPU time that was used: servers, load
    /// generator and every other process together. Near 1, a request
    /// waits for a CPU at every hop, whatever the load it was paced at.
    pub fn busy_share(&self) -> Option<f64> {
        let used = self.servers? + self.client? + self.others.unwrap_or(0.0);
        share(Some(used), self.machine)
    }

    /// Share (0..=1) of the machine's CPU time the hypervisor took.
    pub fn steal_share(&self) -> Option<f64> {
        share(self.steal, self.machine)
    }
}

fn share(part: Option<f64>, whole: Option<f64>) -> Option<f64> {
    match (part, whole) {
        (Some(p), Some(w)) if w > 0.0 => Some((p / w).clamp(0.0, 1.0)),
        _ => None,
    }
}

/// Clock ticks per second of the `/proc` counters.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

impl CpuSample {
    /// Reads the counters now, for this process and the servers `pids`.
    pub fn now(pids: &[u32]) -> CpuSample {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/stat");
        CpuSample {
            at: Instant::now(),
            machine: stat.as_deref().and_then(parse_proc_stat),
            steal: stat.as_deref().and_then(parse_steal_ticks),
            client: read("/proc/self/stat").and_then(|s| parse_process_ticks(&s)),
            servers: pids
                .iter()
                .map(|p| read(&format!("/proc/{p}/stat")).and_then(|s| parse_process_ticks(&s)))
                .collect(),
            udp: read("/proc/net/snmp").and_then(|s| parse_udp_counters(&s)),
        }
    }

    /// What was used from `self` to `later`.
    pub fn until(&self, later: &CpuSample) -> CpuUsage {
        let hz = ticks_per_second();
        let secs = |t: u64| t as f64 / hz;
        let wall = later.at.saturating_duration_since(self.at);
        let servers = if self.servers.is_empty() || self.servers.len() != later.servers.len() {
            None
        } else {
            self.servers
                .iter()
                .zip(&later.servers)
                .map(|(a, b)| Some(b.as_ref()?.saturating_sub(*a.as_ref()?)))
                .sum::<Option<u64>>()
        };
        let client = match (self.client, later.client) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let (busy, total) = match (self.machine, later.machine) {
            (Some((b0, t0)), Some((b1, t1))) => {
                (Some(b1.saturating_sub(b0)), Some(t1.saturating_sub(t0)))
            }
            _ => (None, None),
        };
        let steal = match (self.steal, later.steal) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let others = busy.map(|b| {
            b.saturating_sub(servers.unwrap_or(0))
                .saturating_sub(client.unwrap_or(0))
                .saturating_sub(steal.unwrap_or(0))
        });
        CpuUsage {
            wall: wall_secs(wall),
            servers: servers.map(secs),
            client: client.map(secs),
            others: others.map(secs),
            steal: steal.map(secs),
            machine: total.map(secs),
            udp: match (self.udp, later.udp) {
                (Some(a), Some(b)) => Some(UdpCounters {
                    received: b.received.saturating_sub(a.received),
                    sent: b.sent.saturating_sub(a.sent),
                }),
                _ => None,
            },
        }
    }
}

/// The `steal` ticks (eighth value) of the `cpu ` line of `/proc/stat`.
fn parse_steal_ticks(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    line.split_whitespace().nth(8)?.parse().ok()
}

/// `InDatagrams` and `OutDatagrams` of the `Udp:` lines of
/// `/proc/net/snmp` (a header line of names, then a line of values).
fn parse_udp_counters(text: &str) -> Option<UdpCounters> {
    let mut lines = text
        .lines()
        .filter_map(|l| l.strip_prefix("Udp:"))
        .map(str::split_whitespace);
    let names: Vec<&str> = lines.next()?.collect();
    let values: Vec<&str> = lines.next()?.collect();
    let field = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some(UdpCounters {
        received: field("InDatagrams")?,
        sent: field("OutDatagrams")?,
    })
}

fn wall_secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line: the
/// process's own CPU time, all threads, without its children.
fn parse_process_ticks(text: &str) -> Option<u64> {
    // The command name in parentheses may hold spaces: count fields after
    // the last ')'. Field 3 (state) is the first of them.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_process_and_machine_ticks() {
        let own = "42 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16";
        // utime is field 14 (11 here), stime field 15 (12).
        assert_eq!(parse_process_ticks(own), Some(11 + 12));
        assert_eq!(parse_process_ticks("garbage"), None);
        assert_eq!(parse_process_ticks("1 (x) S 1 2"), None);
        let stat = "cpu  100 5 20 1000 7 1 2 3 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_proc_stat(stat), Some((131, 1138)));
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
        assert_eq!(parse_steal_ticks(stat), Some(3));
        assert_eq!(parse_steal_ticks("cpu  1 2 3\n"), None);
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\n\
                    Udp: 1234 5 0 4321 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\n\
                    UdpLite: 9 9 9 9 9\n";
        assert_eq!(
            parse_udp_counters(snmp),
            Some(UdpCounters {
                received: 1234,
                sent: 4321
            })
        );
        assert_eq!(parse_udp_counters("Udp: InDatagrams\n"), None);
        assert_eq!(
            parse_udp_counters("Udp: InDatagrams OutDatagrams\nUdp: 1 x\n"),
            None
        );
    }

    #[test]
    fn usage_splits_the_machine_between_servers_client_and_others() {
        let at = Instant::now();
        let a = CpuSample {
            at,
            machine: Some((1000, 5000)),
            steal: Some(7),
            client: Some(10),
            servers: vec![Some(100), Some(200)],
            udp: Some(UdpCounters {
                received: 1000,
                sent: 2000,
            }),
        };
        let b = CpuSample {
            at: at + Duration::from_secs(2),
            machine: Some((1300, 5400)),
            steal: Some(47),
            client: Some(60),
            servers: vec![Some(150), Some(300)],
            udp: Some(UdpCounters {
                received: 1900,
                sent: 2600,
            }),
        };
        let u = a.until(&b);
        let hz = ticks_per_second();
        assert_eq!(u.servers, Some(150.0 / hz));
        assert_eq!(u.client, Some(50.0 / hz));
        // Busy 300 = servers 150 + client 50 + steal 40 + others 60.
        assert_eq!(u.steal, Some(40.0 / hz));
        assert_eq!(u.others, Some(60.0 / hz));
        assert_eq!(u.machine, Some(400.0 / hz));
        assert_eq!(u.others_share(), Some(0.15));
        assert_eq!(u.steal_share(), Some(0.1));
        assert_eq!(u.ops_per_server_cpu_second(300), Some(300.0 / (150.0 / hz)));
        assert!((u.wall - 2.0).abs() < 1e-9);
        assert_eq!(u.udp_received_per_op(300), Some(3.0));
        assert_eq!(u.udp_sent_per_op(300), Some(2.0));
        assert_eq!(u.udp_sent_per_op(0), None);
        // A server that vanished makes the server figure unknown, not low.
        let c = CpuSample {
            servers: vec![Some(150), None],
            ..b
        };
        assert_eq!(a.until(&c).servers, None);
        assert_eq!(a.until(&c).ops_per_server_cpu_second(10), None);
    }

    #[test]
    fn sampling_this_process_sees_its_own_cpu() {
        let pid = std::process::id();
        let a = CpuSample::now(&[pid]);
        // Burn CPU until both counters move (ticks are coarse), 10 s at
        // most. The two are read one after the other, so a tick can land
        // between them: waiting for the client figure alone let the server
        // figure of the same process still read zero.
        let mut x = 0u64;
        let start = Instant::now();
        let mut b = CpuSample::now(&[pid]);
        while (b.client == a.client || b.servers == a.servers)
            && start.elapsed() < Duration::from_secs(10)
        {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            b = CpuSample::now(&[pid]);
        }
        std::hint::black_box(x);
        let u = a.until(&b);
        if cfg!(target_os = "linux") {
            assert!(u.client.is_some_and(|c| c > 0.0), "{u:?}");
            assert!(u.servers.is_some_and(|s| s > 0.0), "{u:?}");
        }
    }
}
