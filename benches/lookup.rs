//! The ESC lookup path at growing environment sizes: prints a table (not a timed test). Run:
//! `cargo bench --bench lookup`; results go into docs/benchmarks.md.
//!
//! A snapshot reads ESC's open answer once into an index (names and byte ranges), so a lookup costs its path and
//! its value, not the environment: per-lookup time should stay flat from 100 to 10,000 values, while building the
//! index grows with the environment (once per environment and refresh cycle, shared by every ManagedSecret).
// A benchmark of inputs it builds itself: a broken one should stop it loudly, as a test would.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use keyward::esc::{EnvRef, PropertyPath, Snapshot};
use zeroize::Zeroizing;

const LOOKUPS: usize = 200_000;

/// An open answer with `n` secret strings of 32 characters under `app.groupG.keyI` (100 keys per group), as ESC
/// wraps them (`{value, secret, trace}`).
fn answer(n: usize) -> String {
    let trace = r#""trace":{"def":{"environment":"acme/app/prod","begin":{"line":1,"column":1,"byte":0},"end":{"line":1,"column":9,"byte":8}}}"#;
    let mut groups = Vec::new();
    for g in 0..n.div_ceil(100) {
        let keys: Vec<String> = (0..100.min(n - g * 100))
            .map(|i| format!(r#""key{i}":{{"value":"{:032}","secret":true,{trace}}}"#, g * 100 + i))
            .collect();
        groups.push(format!(r#""group{g}":{{"value":{{{}}},{trace}}}"#, keys.join(",")));
    }
    format!(
        r#"{{"properties":{{"app":{{"value":{{{}}},{trace}}}}}}}"#,
        groups.join(",")
    )
}

/// The lookup before the index (keyward 0.1, `Snapshot::lookup` until the index): the whole answer parsed for
/// each lookup, then the path walked level by level. For comparison only.
fn parse_per_lookup(body: &[u8], path: &[&str]) -> usize {
    type Fields<'a> = BTreeMap<String, &'a serde_json::value::RawValue>;
    let root: Fields<'_> = serde_json::from_slice(body).expect("answer");
    let mut node = root["properties"];
    for (n, key) in path.iter().enumerate() {
        let container = if n == 0 {
            node
        } else {
            serde_json::from_str::<Fields<'_>>(node.get()).expect("node")["value"]
        };
        node = serde_json::from_str::<Fields<'_>>(container.get()).expect("object")[*key];
    }
    node.get().len()
}

fn main() {
    println!("keyward lookup benchmark (release): {LOOKUPS} lookups of random paths per environment size");
    println!(
        "{:>8} {:>12} {:>14} {:>16} {:>12} {:>22}",
        "values", "body bytes", "index (ms)", "index/value (ns)", "lookup (ns)", "parse per lookup (ns)"
    );
    let mut per_lookup = Vec::new();
    for n in [100, 1_000, 10_000] {
        let body = answer(n);
        let snapshot_body = body.clone();
        let bytes = body.len();
        let env = EnvRef::parse("acme/app/prod").expect("environment");
        let started = Instant::now();
        let snapshot = Snapshot::new(env, 1, Zeroizing::new(body.into_bytes()));
        let index = started.elapsed();
        let paths: Vec<PropertyPath> = (0..1_000)
            .map(|i| {
                let v = (i * 7_919) % n;
                PropertyPath::parse(&format!("app.group{}.key{}", v / 100, v % 100)).expect("path")
            })
            .collect();
        let started = Instant::now();
        for i in 0..LOOKUPS {
            let value = snapshot.lookup(&paths[i % paths.len()]).expect("lookup");
            black_box(value);
        }
        let ns = started.elapsed().as_nanos() as f64 / LOOKUPS as f64;
        per_lookup.push(ns);
        let old_runs = 200;
        let started = Instant::now();
        for i in 0..old_runs {
            let v = (i * 7_919) % n;
            let (group, key) = (format!("group{}", v / 100), format!("key{}", v % 100));
            black_box(parse_per_lookup(snapshot_body.as_bytes(), &["app", &group, &key]));
        }
        let old = started.elapsed().as_nanos() as f64 / old_runs as f64;
        println!(
            "{n:>8} {bytes:>12} {:>14.2} {:>16.0} {ns:>12.0} {old:>22.0}",
            index.as_secs_f64() * 1e3,
            index.as_nanos() as f64 / n as f64
        );
    }
    println!(
        "lookup at 10,000 values / at 100 values: {:.2}x (parse per lookup, as before the index: grows with the body)",
        per_lookup[2] / per_lookup[0]
    );
}
