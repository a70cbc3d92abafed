//! AFL++ entry point of the `bgp` target (see `vrouter_fuzz::bgp`); built by `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        vrouter_fuzz::bgp::run(data);
    });
}
