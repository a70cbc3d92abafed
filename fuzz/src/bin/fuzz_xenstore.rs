//! AFL++ entry point of the `xenstore` target (see `vrouter_fuzz::xenstore`); built by `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        vrouter_fuzz::xenstore::run(data);
    });
}
