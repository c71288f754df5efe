//! What the server says about a run: its own request-duration histogram
//! (`paycore_http_request_duration_seconds` in `/metrics`) read before and after, and the CPU
//! time of the server and of the load generator over the run (`/proc/PID/stat`).
//!
//! The histogram is timed by the server's middleware, from the routed request to its response:
//! it leaves out the socket, hyper's parsing and writing, and any wait for a core before the
//! server reads the request. The gap between it and a client's latency is that.

use crate::server::Client;
use std::net::SocketAddr;
use std::time::Instant;

/// The cumulative buckets of one route's 2xx answers and its refused count, as scraped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)` in the order of the exposition (rising `le`, `+Inf` last).
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
    /// Answers of the route that were not 2xx.
    pub not_2xx: u64,
}

impl Histogram {
    /// The `POST route` series of the text exposition `text`.
    pub fn parse(text: &str, route: &str) -> Histogram {
        let route_label = format!("route=\"{route}\"");
        let mut out = Histogram::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("paycore_http_request_duration_seconds_") else { continue };
            if !rest.contains(&route_label) || !rest.contains("method=\"POST\"") {
                continue;
            }
            let Some((series, value)) = rest.rsplit_once(' ') else { continue };
            let ok = series.contains("status=\"2xx\"");
            if series.starts_with("count") && !ok {
                out.not_2xx += value.parse::<u64>().unwrap_or(0);
            }
            if !ok {
                continue;
            }
            if series.starts_with("bucket") {
                let le = label(series, "le").map_or(f64::NAN, |le| {
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::NAN)
                    }
                });
                out.buckets.push((le, value.parse().unwrap_or(0)));
            } else if series.starts_with("sum") {
                out.sum_seconds = value.parse().unwrap_or(0.0);
            } else if series.starts_with("count") {
                out.count = value.parse().unwrap_or(0);
            }
        }
        out
    }

    /// What was added between `before` and `self`.
    pub fn since(&self, before: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, n)| {
                let was = before.buckets.iter().find(|(l, _)| *l == le).map_or(0, |(_, n)| *n);
                (le, n.saturating_sub(was))
            })
            .collect();
        Histogram {
            buckets,
            sum_seconds: self.sum_seconds - before.sum_seconds,
            count: self.count.saturating_sub(before.count),
            not_2xx: self.not_2xx.saturating_sub(before.not_2xx),
        }
    }

    /// The `q` quantile (0 to 1) in seconds, interpolated linearly within its bucket as
    /// Prometheus' `histogram_quantile` does; `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(le, cumulative) in &self.buckets {
            if cumulative as f64 >= rank && cumulative > below {
                if le.is_infinite() {
                    return Some(lower);
                }
                let share = (rank - below as f64) / (cumulative - below) as f64;
                return Some(lower + (le - lower) * share.clamp(0.0, 1.0));
            }
            lower = le;
            below = cumulative;
        }
        Some(lower)
    }
}

/// The value of label `name` in `series` (`bucket{le="0.1",method="POST"}`).
fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let len = series[start..].find('"')?;
    Some(&series[start..start + len])
}

/// User + system CPU time of process `pid` so far, in clock ticks (`utime` + `stime` of
/// `/proc/PID/stat`: every thread, those that ended included).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's `)`: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The state letter of process `pid` (`Z`: exited, not reaped yet).
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails, Linux's usual value).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut client = Client::connect(addr).await?;
    let (status, body) = client.get("/metrics").await?;
    anyhow::ensure!(status.is_success(), "GET /metrics: {status}");
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The server's view of one run: started before the load, finished after it.
pub struct Probe {
    addr: SocketAddr,
    server: u32,
    before: Histogram,
    server_ticks: u64,
    own_ticks: u64,
    started: Instant,
}

/// Which process generated the load.
pub enum Load {
    /// This process (the suite's own client).
    Suite,
    /// Another process, with the CPU ticks it used over the run.
    Other(u64),
}

impl Probe {
    pub async fn start(addr: SocketAddr, server: u32) -> anyhow::Result<Probe> {
        let before = Histogram::parse(&scrape(addr).await?, "/v1/transfers");
        Ok(Probe {
            addr,
            server,
            before,
            server_ticks: cpu_ticks(server).unwrap_or(0),
            own_ticks: cpu_ticks(std::process::id()).unwrap_or(0),
            started: Instant::now(),
        })
    }

    /// The run's figures: server-side p50 / p99 / mean in ms, refused answers, and the server's
    /// and the load generator's CPU in % of one core over the run's wall time.
    pub async fn finish(self, load: Load) -> anyhow::Result<Vec<(&'static str, f64)>> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let server_ticks = cpu_ticks(self.server).unwrap_or(0).saturating_sub(self.server_ticks);
        let load_ticks = match load {
            Load::Suite => cpu_ticks(std::process::id()).unwrap_or(0).saturating_sub(self.own_ticks),
            Load::Other(ticks) => ticks,
        };
        let run = Histogram::parse(&scrape(self.addr).await?, "/v1/transfers").since(&self.before);
        let tck = ticks_per_second();
        let ms = |s: Option<f64>| s.map_or(f64::NAN, |s| s * 1000.0);
        Ok(vec![
            ("server p50 ms", ms(run.quantile(0.50))),
            ("server p99 ms", ms(run.quantile(0.99))),
            ("server mean ms", if run.count == 0 { f64::NAN } else { run.sum_seconds * 1000.0 / run.count as f64 }),
            ("server non-2xx", run.not_2xx as f64),
            ("server CPU %", server_ticks as f64 / tck / wall * 100.0),
            ("client CPU %", load_ticks as f64 / tck / wall * 100.0),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE paycore_http_request_duration_seconds histogram
paycore_http_request_duration_seconds_sum{method="POST",route="/v1/transfers",status="2xx"} 0.5
paycore_http_request_duration_seconds_count{method="POST",route="/v1/transfers",status="2xx"} 100
paycore_http_request_duration_seconds_bucket{le="0.0001",method="POST",route="/v1/transfers",status="2xx"} 0
paycore_http_request_duration_seconds_bucket{le="0.0002",method="POST",route="/v1/transfers",status="2xx"} 50
paycore_http_request_duration_seconds_bucket{le="0.0004",method="POST",route="/v1/transfers",status="2xx"} 98
paycore_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/v1/transfers",status="2xx"} 100
paycore_http_request_duration_seconds_count{method="POST",route="/v1/transfers",status="4xx"} 3
paycore_http_request_duration_seconds_count{method="POST",route="/v1/accounts",status="2xx"} 7
paycore_http_request_duration_seconds_bucket{le="0.0001",method="POST",route="/v1/accounts",status="2xx"} 7
"#;

    #[test]
    fn parses_one_route() {
        let h = Histogram::parse(TEXT, "/v1/transfers");
        assert_eq!(h.count, 100);
        assert_eq!(h.not_2xx, 3);
        assert_eq!(h.sum_seconds, 0.5);
        assert_eq!(h.buckets, vec![(0.0001, 0), (0.0002, 50), (0.0004, 98), (f64::INFINITY, 100)]);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let h = Histogram::parse(TEXT, "/v1/transfers");
        // The 50th of 100 is the top of the (0.1, 0.2] ms bucket; the 99th is past 0.4 ms.
        let near = |got: Option<f64>, want: f64| got.is_some_and(|got| (got - want).abs() < 1e-12);
        assert!(near(h.quantile(0.5), 0.0002), "{:?}", h.quantile(0.5));
        assert!(near(h.quantile(0.25), 0.00015), "{:?}", h.quantile(0.25));
        assert!(near(h.quantile(0.99), 0.0004), "{:?}", h.quantile(0.99));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn since_subtracts_the_earlier_scrape() {
        let after = Histogram::parse(TEXT, "/v1/transfers");
        let mut before = after.clone();
        before.buckets = vec![(0.0001, 0), (0.0002, 40), (0.0004, 40), (f64::INFINITY, 40)];
        before.count = 40;
        before.not_2xx = 1;
        before.sum_seconds = 0.1;
        let run = after.since(&before);
        assert_eq!(run.buckets, vec![(0.0001, 0), (0.0002, 10), (0.0004, 58), (f64::INFINITY, 60)]);
        assert_eq!((run.count, run.not_2xx), (60, 2));
        assert!((run.sum_seconds - 0.4).abs() < 1e-12);
    }

    #[test]
    fn cpu_of_this_process() {
        assert!(cpu_ticks(std::process::id()).is_some());
        // The process's state is its main thread's: running, or (the test harness's main
        // thread waiting for this test's thread) sleeping; never a zombie or stopped.
        let state = state(std::process::id());
        assert!(matches!(state, Some('R' | 'S')), "{state:?}");
        assert_eq!(super::state(u32::MAX), None, "no such process");
    }
}
