//! Measuring helpers: process memory, loopback traffic, order statistics, and running a
//! phase in a child process of its own.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

/// A figure of /proc/self/status in bytes (VmRSS, VmHWM).
pub fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time this process has used, user and system, in seconds (/proc/self/stat, in ticks of
/// 1/100 s).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name, in parentheses, may hold spaces: count the fields after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse::<u64>().unwrap_or(0))
        .sum();
    ticks as f64 / 100.0
}

/// Bytes and packets received on the loopback interface since the namespace was made: every
/// packet sent on loopback is received once. In the private network namespace each phase
/// runs in, that is exactly the nodes' traffic.
pub fn lo_counters() -> (u64, u64) {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    dev.lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .map(|rest| {
            let mut f = rest
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0));
            (f.next().unwrap_or(0), f.next().unwrap_or(0))
        })
        .unwrap_or((0, 0))
}

/// Bytes the loopback device counts per UDP packet beyond its payload (Ethernet, IPv4 and UDP
/// headers: 42), measured with ten datagrams of 100 bytes.
pub fn lo_overhead() -> u64 {
    let (Ok(a), Ok(b)) = (
        UdpSocket::bind("127.0.0.1:0"),
        UdpSocket::bind("127.0.0.1:0"),
    ) else {
        return 42;
    };
    let Ok(to) = b.local_addr() else { return 42 };
    let (bytes0, packets0) = lo_counters();
    let mut buf = [0u8; 200];
    for _ in 0..10 {
        if a.send_to(&[7u8; 100], to).is_err() || b.recv(&mut buf).is_err() {
            return 42;
        }
    }
    let (bytes1, packets1) = lo_counters();
    if packets1 - packets0 == 10 && bytes1 - bytes0 >= 1000 {
        (bytes1 - bytes0 - 1000) / 10
    } else {
        42
    }
}

/// Loopback traffic from a starting point: UDP payload bytes (QUIC packets, both directions).
pub struct Wire {
    start: (u64, u64),
    overhead: u64,
}

/// How long the traffic must be quiet before [`Wire::quiet`] reads it.
const QUIET: Duration = Duration::from_millis(300);

impl Wire {
    /// Start counting now.
    pub fn start(overhead: u64) -> Wire {
        Wire {
            start: lo_counters(),
            overhead,
        }
    }

    /// UDP payload bytes and packets since the start.
    pub fn read(&self) -> (u64, u64) {
        let (bytes, packets) = lo_counters();
        let packets = packets - self.start.1;
        (
            (bytes - self.start.0).saturating_sub(packets * self.overhead),
            packets,
        )
    }

    /// Wait until no packet has passed for [`QUIET`] (at most 10 s), then read.
    pub async fn quiet(&self) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = (lo_counters().1, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = lo_counters().1;
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= QUIET || Instant::now() > deadline {
                return self.read();
            }
        }
    }
}

/// Min, median and max of samples (NaN when there are none).
pub fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (v[0], median, v[n - 1])
}

/// Nearest-rank percentile of samples.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Run a phase in a child process (in a private network namespace if `netns`); its result is
/// the last `RESULT ` line of its stdout.
pub fn child(netns: bool, phase: &str, args: Value) -> Result<Value> {
    let exe = std::env::current_exe().context("current exe")?;
    let mut command = if netns {
        let mut c = Command::new("unshare");
        c.args(["-rn", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let output = command
        .arg("__phase")
        .arg(phase)
        .arg(args.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("run a phase")?;
    if !output.status.success() {
        bail!("phase {phase} {args} failed");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .with_context(|| format!("phase {phase} printed no result"))?;
    Ok(serde_json::from_str(line)?)
}
