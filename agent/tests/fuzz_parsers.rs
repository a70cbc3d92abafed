//! Property tests: the config parser and every control-message decoder the agent and vrctl use
//! never panic on hostile input and fail with clear one-line errors; any config the parser
//! accepts programs a dataplane that accepts it, and reconciling again is a no-op.

use proptest::prelude::*;
use vrouter_agent::alloc::Allocations;
use vrouter_agent::compile::compile;
use vrouter_agent::config::Config;
use vrouter_agent::dump::DumpIndex;
use vrouter_agent::reconcile::reconcile;
use vrouter_agent::testkit::MemDataplane;
use vrouter_dataplane::ctl::proto::{encode, Decoder, StateDump};
use vrouter_dataplane::ctl::{Request, Response};
use vrouter_dataplane::tables::Limits;

const VALID: &str = r#"
[underlay]
fabric_mac = "52:54:00:aa:bb:01"
gateway_mac = "52:54:00:cc:dd:01"
encap = "mpls-over-udp"
[underlay.neighbours]
"10.0.0.12" = "52:54:00:cc:dd:02"

[[networks]]
name = "net1"
vrf = "default-domain:admin:net1"
subnet = "10.1.1.0/24"
gateway = "10.1.1.1"

[[networks]]
name = "public"
subnet = "192.0.2.0/24"

[[interfaces]]
name = "vif1.0"
mac = "02:00:00:00:01:03"
ip = "10.1.1.3"
network = "net1"
mtu = 1500

[[routes]]
network = "net1"
prefix = "10.1.1.4/32"
label = 25
remote = "10.0.0.12"
encap = "mpls-over-gre"

[[floating_ips]]
network = "public"
address = "192.0.2.10"
interface = "vif1.0"
"#;

fn check_error_is_one_line(r: Result<Config, vrouter_agent::config::ConfigError>) {
    if let Err(e) = r {
        let s = e.to_string();
        assert!(!s.is_empty());
        assert!(!s.contains('\n'), "multi-line error: {s:?}");
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    DropLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..80).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<usize>().prop_map(Mutation::DropLine),
    ]
}

fn apply_mutations(base: &str, ms: &[Mutation]) -> Vec<u8> {
    let mut b = base.as_bytes().to_vec();
    for m in ms {
        if b.is_empty() {
            break;
        }
        match *m {
            Mutation::Flip(i, v) => {
                let i = i % b.len();
                b[i] = v;
            }
            Mutation::Delete(i, n) => {
                let i = i % b.len();
                let e = (i + n).min(b.len());
                b.drain(i..e);
            }
            Mutation::Duplicate(i, n) => {
                let i = i % b.len();
                let e = (i + n).min(b.len());
                let chunk = b[i..e].to_vec();
                b.splice(i..i, chunk);
            }
            Mutation::DropLine(i) => {
                let text = String::from_utf8_lossy(&b).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                let k = i % lines.len().max(1);
                b = lines
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != k)
                    .map(|(_, l)| *l)
                    .collect::<Vec<_>>()
                    .join("\n")
                    .into_bytes();
            }
        }
    }
    b
}

/// A random but plausible config: networks, interfaces (maybe colliding), routes, FIPs.
fn config_text() -> impl Strategy<Value = String> {
    (
        1usize..4,
        proptest::collection::vec((0usize..4, 2u8..12, 0u8..3), 0..12),
        proptest::collection::vec((0usize..4, 0u8..255, 16u32..2000, 12u8..15, any::<bool>()), 0..6),
        proptest::collection::vec((0usize..4, 0usize..12, 2u8..250), 0..3),
    )
        .prop_map(|(nets, ifs, routes, fips)| {
            let mut s = String::from(
                "[underlay]\ngateway_mac = \"52:54:00:cc:dd:01\"\n",
            );
            for n in 0..nets {
                s += &format!("[[networks]]\nname = \"n{n}\"\nsubnet = \"10.{n}.0.0/24\"\n");
            }
            for (k, (net, host, mac)) in ifs.iter().enumerate() {
                s += &format!(
                    "[[interfaces]]\nname = \"vif{k}.0\"\nmac = \"02:00:00:00:{mac:02x}:{k:02x}\"\nip = \"10.{net}.0.{host}\"\nnetwork = \"n{net}\"\n"
                );
            }
            for (net, third, label, remote, gre) in routes {
                let encap = if gre { "mpls-over-gre" } else { "mpls-over-udp" };
                s += &format!(
                    "[[routes]]\nnetwork = \"n{net}\"\nprefix = \"10.200.{third}.0/24\"\nlabel = {label}\nremote = \"10.0.0.{remote}\"\nencap = \"{encap}\"\n"
                );
            }
            for (net, iface, host) in fips {
                s += &format!(
                    "[[floating_ips]]\nnetwork = \"n{net}\"\naddress = \"10.{net}.0.{host}\"\ninterface = \"vif{iface}.0\"\n"
                );
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn config_parser_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_error_is_one_line(Config::parse(&String::from_utf8_lossy(&bytes)));
    }

    #[test]
    fn config_parser_never_panics_on_mutated_valid_files(ms in proptest::collection::vec(mutation(), 1..6)) {
        let b = apply_mutations(VALID, &ms);
        check_error_is_one_line(Config::parse(&String::from_utf8_lossy(&b)));
    }

    #[test]
    fn response_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut d = Decoder::new();
        d.feed(&bytes);
        for _ in 0..4 {
            match d.next_message::<Response>() {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    }

    #[test]
    fn decoders_never_panic_on_mutated_valid_frames(
        which in 0usize..4,
        ms in proptest::collection::vec(mutation(), 1..4),
        split in any::<usize>(),
    ) {
        let dump = MemDataplane::new(0x0a00_000b).dump();
        let frame = match which {
            0 => encode(&Response::State(Box::new(dump))),
            1 => encode(&Response::Vifs { vifs: vec![] }),
            2 => encode(&Request::RouteDump { vrf: 1, prefix: Some((1, 32)) }),
            _ => encode(&Response::Error { kind: "invalid_op".into(), message: "x".into(), index: Some(3) }),
        };
        // Mutate only the payload half the time, so the JSON decoder (not just the header
        // checks) sees the damage.
        let mut bytes = frame[..8].to_vec();
        let body = String::from_utf8_lossy(&frame[8..]).into_owned();
        let body = apply_mutations(&body, &ms);
        if split % 2 == 0 {
            bytes[4..8].copy_from_slice(&(body.len() as u32).to_be_bytes());
        }
        bytes.extend_from_slice(&body);
        let cut = split % (bytes.len() + 1);
        let mut d = Decoder::new();
        d.feed(&bytes[..cut]);
        let _ = d.next_message::<Response>();
        d.feed(&bytes[cut..]);
        let _ = d.next_message::<Response>();
        let mut d = Decoder::new();
        d.feed(&bytes);
        let _ = d.next_message::<Request>();
        let _ = d.next_message::<StateDump>();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the parser accepts, the dataplane accepts, and a second pass changes nothing.
    #[test]
    fn accepted_configs_program_and_converge(text in config_text()) {
        let Ok(cfg) = Config::parse(&text) else { return Ok(()); };
        let mut dp = MemDataplane::new(0x0a00_000b);
        let mut alloc = Allocations::default();
        let idx = DumpIndex::new(dp.dump());
        let c = compile(&cfg, &idx, &mut alloc, &Limits::default()).expect("ids");
        let ops = reconcile(&c.desired, &idx);
        prop_assert!(dp.apply(ops).is_ok(), "dataplane refused the program of:\n{}", text);
        let idx = DumpIndex::new(dp.dump());
        let c = compile(&cfg, &idx, &mut alloc, &Limits::default()).expect("ids");
        prop_assert_eq!(reconcile(&c.desired, &idx), vec![]);
        // Starting over (no state, same dataplane) also converges without changes.
        let mut fresh = Allocations::default();
        let c2 = compile(&cfg, &idx, &mut fresh, &Limits::default()).expect("ids");
        prop_assert_eq!(reconcile(&c2.desired, &idx), vec![]);
        prop_assert_eq!(c2.bindings, c.bindings);
    }
}
