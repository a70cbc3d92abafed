//! Whole-pipeline input: a frame received on a VM port, the fabric port, vhost0 or pkt0 of the
//! harness's small host (`vrouter_dataplane::harness::fixture`), through the real pipeline and
//! its output stage.
//!
//! Input layout: one control byte, then the frame. Control bits 0-2 pick the input interface
//! ([`PORTS`]), bit 3 adds the fixture's network policy (so flows are created and looked up),
//! bit 4 sends the frame twice (the second meets the flow or state the first left).
//!
//! Invariants: every frame gets exactly one verdict; a frame the pipeline counted as dropped
//! leaves nothing on any interface and is counted once, under the reason of its verdict; a frame
//! sent goes out on the interface of its verdict (as fragments, possibly) or, if the output stage
//! refuses it, is counted as one drop; a frame the dataplane sends to pkt0 carries a valid trap
//! header.

use vrouter_dataplane::buf::MAX_PKT_LEN;
use vrouter_dataplane::harness::fixture::{self, AGENT, FABRIC, VHOST, VM_A, VM_B, VM_C};
use vrouter_dataplane::harness::{Harness, Verdict};
use vrouter_dataplane::tables::Limits;
use vrouter_dataplane::trap::{AgentCmd, AgentHeader};
use vrouter_dataplane::DropReason;

/// Input interfaces, by control bits 0-2: the VMs, the fabric, vhost0, pkt0 and one that does
/// not exist.
pub const PORTS: [u16; 8] = [VM_A, FABRIC, VM_B, VM_C, VHOST, AGENT, VM_A, 77];

/// Tables just big enough for the fixture: a fresh harness per input stays cheap, so a crash
/// replays from its input alone.
fn limits() -> Limits {
    Limits {
        vifs: 16,
        vrfs: 8,
        nexthops: 64,
        labels: 256,
        routes: 64,
        flows: 256,
    }
}

/// Runs the frame in `data[1..]` on the port `data[0]` selects.
pub fn run(data: &[u8]) {
    let Some((&ctl, frame)) = data.split_first() else {
        return;
    };
    // What a port hands on is at most a buffer (the harness calls a longer one an RX discard
    // without counting it, which is the device's business, not the pipeline's).
    let frame = &frame[..frame.len().min(MAX_PKT_LEN)];
    let vif = PORTS[usize::from(ctl & 7)];
    let mut h = Harness::new(limits());
    h.program(fixture::ops());
    if ctl & 8 != 0 {
        h.program(fixture::policy_ops(0));
        h.flows().set_clock(Some(1000));
    }
    let rounds = if ctl & 16 != 0 { 2 } else { 1 };
    for _ in 0..rounds {
        one(&mut h, vif, frame);
    }
}

fn drops(h: &Harness) -> Vec<(DropReason, u64)> {
    h.stats.drops()
}

/// One frame through the pipeline, with the accounting checks.
fn one(h: &mut Harness, vif: u16, frame: &[u8]) {
    let before = drops(h);
    let verdicts = h.run(vif, &[frame]);
    assert_eq!(verdicts.len(), 1, "one verdict per frame");
    let after = drops(h);
    let counted: Vec<(DropReason, u64)> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| a.1 != b.1)
        .map(|(b, a)| (a.0, a.1 - b.1))
        .collect();
    match &verdicts[0] {
        Verdict::Drop(reason) => {
            assert!(
                h.sent.is_empty(),
                "dropped as {reason:?} but sent {:?}",
                h.sent
            );
            assert_eq!(counted, vec![(*reason, 1)], "a drop is counted once");
        }
        Verdict::Tx { vif: out, frame } => {
            if h.sent.is_empty() {
                assert_eq!(counted.len(), 1, "refused on output, counted {counted:?}");
                assert_eq!(counted[0].1, 1);
            } else {
                assert!(counted.is_empty(), "sent and counted {counted:?}");
                for (v, f) in &h.sent {
                    assert_eq!(v, out, "sent on another interface than its verdict's");
                    // vhost0's frames pass to the fabric as the host kernel made them.
                    assert!(!f.is_empty() || vif == VHOST, "empty frame sent");
                }
                // A trap carries its header; the agent cannot send a frame back to itself.
                if *out == AGENT {
                    trapped(frame);
                }
            }
        }
    }
}

/// A frame to the agent starts with a trap header.
fn trapped(frame: &[u8]) {
    let Some(hdr) = AgentHeader::parse(frame) else {
        panic!("frame to pkt0 without a valid agent header: {frame:02x?}");
    };
    assert_eq!(hdr.cmd, AgentCmd::Trap, "the dataplane only traps");
}
