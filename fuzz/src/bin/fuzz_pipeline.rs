//! AFL++ entry point of the `pipeline` target (see `vrouter_fuzz::pipeline`); built by `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        vrouter_fuzz::pipeline::run(data);
    });
}
