//! AFL++ entry point of the `ctl` target (see `vrouter_fuzz::ctl`); built by `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        vrouter_fuzz::ctl::run(data);
    });
}
