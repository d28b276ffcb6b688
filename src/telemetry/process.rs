//! The process metrics Prometheus' client libraries export by convention
//! (<https://prometheus.io/docs/instrumenting/writing_clientlibs/#process-metrics>): CPU seconds, resident and
//! virtual memory, open and maximum file descriptors, threads and the start time, read from `/proc/self` at
//! scrape time (procfs). So the memory keyward holds per ManagedSecret can be watched in production.
//! Elsewhere than Linux, or if `/proc` cannot be read, the metrics are left out of the scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads `/proc/self` on every scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of the process, in the units the metrics use (seconds, bytes, counts).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: i64,
    pub start_time_seconds: Option<f64>,
}

/// The current process, or None when `/proc` cannot be read.
pub fn read() -> Option<Reading> {
    let me = procfs::process::Process::myself().ok()?;
    let stat = me.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    let boot = procfs::boot_time_secs().ok();
    let max_fds = me.limits().ok().and_then(|l| match l.max_open_files.soft_limit {
        procfs::process::LimitValue::Value(v) => Some(v),
        procfs::process::LimitValue::Unlimited => None,
    });
    Some(Reading {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_bytes: stat.rss.saturating_mul(page),
        virtual_bytes: stat.vsize,
        open_fds: me.fd_count().ok().and_then(|n| u64::try_from(n).ok()),
        max_fds,
        threads: stat.num_threads,
        start_time_seconds: boot.map(|b| b as f64 + stat.starttime as f64 / ticks),
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(r) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(r.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?)?;
        let gauges: [(&str, &str, Option<f64>); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                Some(r.resident_bytes as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                Some(r.virtual_bytes as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                r.open_fds.map(|n| n as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                r.max_fds.map(|n| n as f64),
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                Some(r.threads as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                r.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_in_the_metrics_units() {
        let r = read().expect("/proc/self is readable on Linux");
        assert!(r.resident_bytes > 1 << 20, "{r:?}");
        assert!(r.virtual_bytes >= r.resident_bytes);
        assert!(r.open_fds.is_some_and(|n| n >= 3));
        assert!(r.threads >= 1);
        let started = r.start_time_seconds.expect("boot time is known");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 365.0,
            "{started} vs {now}"
        );
    }

    #[test]
    fn the_scrape_names_the_conventional_metrics() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
