//! AFL++ entry point of the `dhcp` target (see `vrouter_fuzz::dhcp`); built by `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        vrouter_fuzz::dhcp::run(data);
    });
}
