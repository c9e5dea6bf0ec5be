//! What `roster-load` reads from and asks of the machine: process memory from
//! `/proc/<pid>/status`, the descriptor limit, and the ephemeral port range that decides how
//! many loopback source addresses N sockets need.

use std::net::Ipv4Addr;

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...), in bytes; `None` when the
/// process is gone or the field is missing.
pub(crate) fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&status, field).map(|kb| kb * 1024)
}

fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// CPU time a process has used (user + system, `/proc/<pid>/stat`), seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    parse_stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `utime` and `stime` are fields 14 and 15, counted after the `(comm)` field (which may hold
/// spaces), in clock ticks of `USER_HZ`, which Linux fixes at 100 for `/proc`.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The 1-minute load average (`/proc/loadavg`): how busy the shared machine was.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// The soft and hard `RLIMIT_NOFILE` after raising the soft limit to the hard one.
pub(crate) fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    rlimit::increase_nofile_limit(u64::MAX)?;
    rlimit::getrlimit(rlimit::Resource::NOFILE)
}

/// How many ports `net.ipv4.ip_local_port_range` gives one source address towards one
/// destination (28,232 with Linux's default 32768–60999); the default when unreadable.
pub(crate) fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_port_range(&s))
        .unwrap_or(60_999 - 32_768 + 1)
}

fn parse_port_range(text: &str) -> Option<usize> {
    let mut it = text.split_whitespace().map(|p| p.parse::<usize>().ok());
    let (low, high) = (it.next()??, it.next()??);
    (high >= low).then(|| high - low + 1)
}

/// The loopback source addresses for `sockets` sockets to one destination: none (let the
/// kernel choose) while one address's ports suffice with a 10 % margin, else
/// 127.0.0.2, 127.0.0.3, … as many as needed (`forced` overrides the count).
pub(crate) fn source_addrs(sockets: usize, ports_per_addr: usize, forced: Option<usize>) -> Vec<Ipv4Addr> {
    let usable = (ports_per_addr * 9 / 10).max(1);
    let count = forced.unwrap_or(if sockets <= usable { 0 } else { sockets.div_ceil(usable) });
    (0..count.min(250)).map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_bytes() {
        let status = "Name:\troster\nVmHWM:\t  20480 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(12345));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        assert_eq!(parse_status_kb(status, "Threads"), None);
        let own = status_bytes(std::process::id(), "VmRSS").unwrap();
        assert!(own > 1 << 20, "{own}");
        assert_eq!(status_bytes(u32::MAX, "VmRSS"), None);
    }

    #[test]
    fn cpu_time_is_utime_plus_stime_in_hundredths() {
        let stat = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
        assert!(load_average().is_some());
    }

    #[test]
    fn port_range_counts_both_ends() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(28_232));
        assert_eq!(parse_port_range("1024 1024"), Some(1));
        assert_eq!(parse_port_range("9 1"), None);
        assert_eq!(parse_port_range(""), None);
        assert!(ephemeral_ports() > 0);
    }

    #[test]
    fn source_addresses_only_when_one_address_runs_out_of_ports() {
        assert!(source_addrs(20_000, 28_232, None).is_empty());
        let addrs = source_addrs(60_000, 28_232, None);
        assert_eq!(addrs, [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4)]);
        assert_eq!(source_addrs(10, 28_232, Some(2)).len(), 2);
        assert!(source_addrs(10, 28_232, Some(0)).is_empty());
    }

    #[test]
    fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
    }
}
