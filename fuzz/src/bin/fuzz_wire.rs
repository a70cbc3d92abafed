//! AFL++ entry point of the `wire` target (see `vrouter_fuzz::wire`); built by `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        vrouter_fuzz::wire::run(data);
    });
}
