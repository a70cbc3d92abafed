#!/usr/bin/env bash
# Runs every test of the project: installs what the tests need (Debian and PyPI packages), checks
# formatting and lints, then the whole workspace test suite. Run as root: the end-to-end tests
# build network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root (the namespace tests need it): sudo $0" >&2
  exit 1
fi

# Seconds of AFL++ per fuzz target after the tests (0 skips it; install-deps.sh installs cargo-afl
# when it is not 0).
export FUZZ_SECONDS="${FUZZ_SECONDS:-5}"
# scripts/package-test.sh runs after the tests; install-deps.sh installs cargo-deb for it.
export PACKAGE_TEST=1
# The test suite's PyPI packages (vnc_api for the Contrail client tests).
export TEST_DEPS=1
./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --no-fail-fast 2>&1 | tee /tmp/vrouter-test.log
# The .deb from the binaries just built, installed into an empty root, units verified.
./scripts/package-test.sh
# The fuzz targets' corpus is replayed by the tests above; then a short bounded AFL++ run of every
# target (FUZZ_SECONDS each). On a fresh machine its instrumented build takes about 5 CPU minutes
# (docs/fuzzing.md, "CI bound").
if [ "${FUZZ_SECONDS:-0}" != 0 ]; then
  ./scripts/fuzz.sh "$FUZZ_SECONDS"
fi
