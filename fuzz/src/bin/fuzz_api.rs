//! AFL++ entry point of the `api` target (see `vrouter_fuzz::api`); built by `scripts/fuzz.sh`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        vrouter_fuzz::api::run(data);
    });
}
