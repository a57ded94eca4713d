//! Pieces several scenarios share.

use crate::procs;
use std::net::{IpAddr, Ipv4Addr};

/// Source addresses 127.0.0.`from`.. (`count` of them), 28k ports each.
pub fn sources(from: u8, count: u8) -> Vec<IpAddr> {
    (0..count)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, from + i)))
        .collect()
}

/// Total CPU seconds of some processes.
pub fn cpu(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|p| procs::cpu_seconds(*p).unwrap_or(0.0))
        .sum()
}

/// Merges histograms printed by several workers.
pub fn merge(results: &[serde_json::Value], field: &str) -> Option<hdrhistogram::Histogram<u64>> {
    let mut merged: Option<hdrhistogram::Histogram<u64>> = None;
    for result in results {
        let Some(h) = result[field]
            .as_str()
            .and_then(|t| crate::report::decode_histogram(t).ok())
        else {
            continue;
        };
        match &mut merged {
            Some(m) => {
                let _ = m.add(&h);
            }
            None => merged = Some(h),
        }
    }
    merged
}
