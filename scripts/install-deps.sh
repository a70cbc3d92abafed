#!/usr/bin/env bash
# Installs what the devcloud needs (and, with TEST_DEPS=1, the test suite) on a fresh Debian 12
# machine (root).
# Idempotent: only missing packages are fetched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
want() { grep -v '^\s*#' "$1" | awk 'NF{print $1}'; }

missing=()
for p in $(want "$here/deps/apt.txt"); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -q
  echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# PyPI packages only for the test suite (scripts/test.sh sets TEST_DEPS=1): the devcloud needs
# none of them.
pips=$(want "$here/deps/pip.txt")
if [ "${TEST_DEPS:-0}" != 0 ] && [ -n "$pips" ]; then
  python3 -m pip install -q --disable-pip-version-check $pips
fi

# cargo-afl for the bounded fuzz run of scripts/test.sh (FUZZ_SECONDS, default 5; scripts/fuzz.sh);
# installing it also builds the AFL++ it bundles, so no Debian package is needed.
export PATH="$HOME/.cargo/bin:$PATH"
if [ "${FUZZ_SECONDS:-0}" != 0 ] && ! cargo afl --version >/dev/null 2>&1; then
  echo "install-deps: cargo install cargo-afl"
  cargo install cargo-afl --locked --quiet
fi

# cargo-deb for scripts/package-test.sh (builds the .deb from the test run's binaries); only for
# scripts/test.sh (PACKAGE_TEST=1), not for the devcloud.
if [ "${PACKAGE_TEST:-0}" != 0 ] && ! cargo deb --version >/dev/null 2>&1; then
  echo "install-deps: cargo install cargo-deb"
  cargo install cargo-deb --locked --quiet
fi
if [ "${PACKAGE_TEST:-0}" != 0 ] && ! cargo generate-rpm --version >/dev/null 2>&1; then
  echo "install-deps: cargo install cargo-generate-rpm"
  cargo install cargo-generate-rpm --locked --quiet
fi
