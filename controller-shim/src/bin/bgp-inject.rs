// SPDX-License-Identifier: Apache-2.0
//! `bgp-inject`: a load generator for `benches/bgp/run.sh`. It peers with a BGP router (GoBGP
//! in the bench), announces N VPN-IPv4 host routes (`100.64.0.0 + i`/32, one RD, one route
//! target, labels from `--label-base`) in full-size UPDATEs as fast as the socket takes them,
//! then keeps the session up (keepalives) for `--linger` seconds so the router keeps them.
//! Encodes with the shim's own codec; reads and ignores what the router sends.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use vrouter_api::Ipv4Prefix;
use vrouter_shim::bgp::codec::{self, PathAttrs, Sender, MAX_LEN};
use vrouter_shim::bgp::types::{Rd, RouteTarget, VpnKey};

#[derive(Debug, Parser)]
#[command(
    name = "bgp-inject",
    version,
    about = "Announce N VPN-IPv4 routes to a BGP router"
)]
struct Args {
    /// The router (ADDR:PORT).
    #[arg(long)]
    peer: SocketAddr,
    /// Our address (the router's configured neighbour address) and router-id.
    #[arg(long)]
    source: Ipv4Addr,
    /// Our AS.
    #[arg(long, default_value_t = 65003)]
    asn: u32,
    /// How many routes.
    #[arg(long, default_value_t = 100_000)]
    routes: u32,
    /// Route target, `<AS>:<n>`.
    #[arg(long)]
    rt: String,
    /// Next hop of every route (default: --source).
    #[arg(long)]
    nexthop: Option<Ipv4Addr>,
    /// First label.
    #[arg(long, default_value_t = 1000)]
    label_base: u32,
    /// Seconds to stay connected after the last UPDATE.
    #[arg(long, default_value_t = 60)]
    linger: u64,
    /// Milliseconds between our OPEN and the first UPDATE (the session comes up meanwhile).
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bgp-inject: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<(), String> {
    let rt: RouteTarget = format!("target:{}", a.rt)
        .parse()
        .map_err(|e| format!("--rt: {e}"))?;
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    sock.bind(&SocketAddr::from((a.source, 0)).into())
        .map_err(|e| format!("bind {}: {e}", a.source))?;
    sock.connect_timeout(&a.peer.into(), Duration::from_secs(5))
        .map_err(|e| format!("connect {}: {e}", a.peer))?;
    let mut s: TcpStream = sock.into();
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.write_all(&codec::open(a.asn, 90, a.source))
        .and_then(|_| s.write_all(&codec::keepalive()))
        .map_err(|e| format!("open: {e}"))?;
    // Drain what the router sends (its OPEN, keepalives, its own routes) on another thread.
    let mut r = s.try_clone().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
    });
    std::thread::sleep(Duration::from_millis(a.settle_ms));
    let attrs = PathAttrs {
        nexthop: a.nexthop.unwrap_or(a.source),
        targets: vec![rt],
        encaps: Vec::new(),
    };
    let sender = Sender {
        asn: a.asn,
        ibgp: false,
    };
    let rd = Rd::asn(u16::try_from(a.asn).unwrap_or(65003), 1);
    let t = Instant::now();
    let mut batch = Vec::new();
    let mut size = 100usize;
    for i in 0..a.routes {
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i);
        let key = VpnKey {
            rd,
            prefix: Ipv4Prefix::host(addr),
        };
        let n = codec::nlri_len(&key);
        if size + n > MAX_LEN - 64 {
            s.write_all(&codec::announce(sender, &attrs, &batch))
                .map_err(|e| format!("update: {e}"))?;
            batch.clear();
            size = 100;
        }
        size += n;
        batch.push((key, a.label_base + i % 500_000));
    }
    if !batch.is_empty() {
        s.write_all(&codec::announce(sender, &attrs, &batch))
            .map_err(|e| format!("update: {e}"))?;
    }
    eprintln!(
        "bgp-inject: {} routes sent in {:.2} s",
        a.routes,
        t.elapsed().as_secs_f64()
    );
    let end = Instant::now() + Duration::from_secs(a.linger);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(10).min(end - Instant::now()));
        s.write_all(&codec::keepalive())
            .map_err(|e| format!("keepalive: {e}"))?;
    }
    Ok(())
}
