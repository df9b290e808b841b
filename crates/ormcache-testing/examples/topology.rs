//! Starts one Redis topology of this harness for a test written in another
//! language (the Python package's pytest suite) and keeps it up until its standard
//! input closes; every process it started is then killed and its files removed.
//!
//! ```text
//! cargo run -p ormcache-testing --example topology -- <kind>
//! ```
//!
//! `<kind>`: `tls` (a server that requires a client certificate signed by the test
//! CA), `cluster` (three primaries), `tls-cluster`, `sentinel` (a master, a replica,
//! three Sentinels, password `s3cret`) or `tls-sentinel`. Once the topology is
//! ready, one JSON line goes to standard output:
//! `{"url": …, "ca": …, "cert": …, "key": …, "other_ca": …, "rogue_cert": …,
//! "rogue_key": …, "plain_ports": […]}` (the certificate fields only for the TLS
//! kinds; `plain_ports`: the plain-text ports of the data nodes, for the test's own
//! checks). Lines on standard input are commands: `failover` (Sentinel kinds:
//! switch the master to the replica and answer `{"master_port": …}` once the
//! Sentinels report the new one).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, Write};
use std::path::Path;

use ormcache_testing::{RedisCluster, RedisSentinels, TestCerts, TlsRedisCluster, TlsRedisServer};

/// A started topology; dropping it stops every process.
enum Topology {
    /// A TLS server or a cluster: only kept alive (its processes stop on drop).
    Kept(#[allow(dead_code)] Box<dyn std::any::Any>),
    /// Sentinels: they also take commands.
    Sentinel(RedisSentinels),
}

/// A JSON string literal (paths and URLs here are ASCII without quotes, but be exact).
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path(p: &Path) -> String {
    json_str(&p.display().to_string())
}

fn main() {
    let kind = std::env::args().nth(1).unwrap_or_default();
    let certs = kind.starts_with("tls").then(TestCerts::generate);
    let (topology, url, plain_ports) = match (kind.as_str(), &certs) {
        ("tls", Some(c)) => {
            let s = TlsRedisServer::start(c, true, &[]);
            let (url, port) = (s.url(), s.server().port());
            (Topology::Kept(Box::new(s)), url, vec![port])
        }
        ("cluster", None) => {
            let cl = RedisCluster::start();
            let ports: Vec<u16> = cl.nodes().iter().map(|n| n.port()).collect();
            let seeds: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            let url = format!("redis+cluster://{}", seeds.join(","));
            (Topology::Kept(Box::new(cl)), url, ports)
        }
        ("tls-cluster", Some(c)) => {
            let cl = TlsRedisCluster::start(c);
            let ports = cl.nodes().iter().map(|n| n.server().port()).collect();
            let url = cl.url();
            (Topology::Kept(Box::new(cl)), url, ports)
        }
        ("sentinel", None) => {
            let s = RedisSentinels::start(Some("s3cret"));
            let url = s.url();
            (Topology::Sentinel(s), url, vec![])
        }
        ("tls-sentinel", Some(c)) => {
            let s = RedisSentinels::start_tls(c, Some("s3cret"));
            let url = s.url();
            (Topology::Sentinel(s), url, vec![])
        }
        _ => {
            eprintln!("usage: topology tls|cluster|tls-cluster|sentinel|tls-sentinel");
            std::process::exit(2);
        }
    };
    let mut fields = vec![format!("\"url\":{}", json_str(&url))];
    if let Some(c) = &certs {
        let (cert, key) = c.client();
        let (rogue_cert, rogue_key) = c.rogue_client();
        fields.push(format!("\"ca\":{}", path(&c.ca())));
        fields.push(format!("\"cert\":{}", path(&cert)));
        fields.push(format!("\"key\":{}", path(&key)));
        fields.push(format!("\"other_ca\":{}", path(&c.other_ca())));
        fields.push(format!("\"rogue_cert\":{}", path(&rogue_cert)));
        fields.push(format!("\"rogue_key\":{}", path(&rogue_key)));
    }
    let ports: Vec<String> = plain_ports.iter().map(u16::to_string).collect();
    fields.push(format!("\"plain_ports\":[{}]", ports.join(",")));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{{{}}}", fields.join(",")).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match (line.trim(), &topology) {
            ("failover", Topology::Sentinel(s)) => {
                let old = s.master_port();
                s.failover();
                let new = s.wait_for_new_master(old);
                writeln!(out, "{{\"master_port\":{new}}}").unwrap();
            }
            (other, _) => writeln!(out, "{{\"error\":{}}}", json_str(other)).unwrap(),
        }
        out.flush().unwrap();
    }
    // Standard input closed: the test is done (or gone). Stop everything.
    drop(topology);
    drop(certs);
}
