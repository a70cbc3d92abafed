#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside bytes (fuzz/, docs/fuzzing.md) with AFL++
# through cargo-afl, each target for a bounded time, starting from its checked-in corpus.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 180 s, every target)
#
# Installs cargo-afl from crates.io if it is missing (that also builds its AFL++), builds the
# instrumented targets into fuzz/target, runs each with AFL_NO_UI for the given time, prints
# executions and crashes per target and copies each crashing input to fuzz/out/crashes/<target>/.
# Exits non-zero if any target crashed (or AFL could not run it).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-180}"
shift || true
all=(wire pipeline ctl xenstore dhcp api bgp)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo afl --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-afl (builds AFL++ too)"
  cargo install cargo-afl --locked
fi
# cargo-afl keeps one AFL++ build per rustc version: a new toolchain needs its own ("already
# built" is the usual answer; a real failure shows in the build below).
cargo afl config --build >/dev/null 2>&1 || true

# The workspace's release profile has fat LTO and debug info for the daemons; instrumented fuzz
# builds need neither and build much faster without (from scratch: about 300 s of CPU, against
# 410 s with debug info; an unoptimised build takes longer still, instrumentation and all).
export CARGO_TARGET_DIR="$PWD/fuzz/target"
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
export CARGO_PROFILE_RELEASE_DEBUG=0
bins=()
for t in "${targets[@]}"; do bins+=(--bin "fuzz_$t"); done
start=$(date +%s)
cargo afl build --release --quiet -p vrouter-fuzz --features afl "${bins[@]}"
echo "fuzz: build took $(($(date +%s) - start)) s"

out="$PWD/fuzz/out"
mkdir -p "$out"
# No UI, no CPU binding (the machine is shared), no core-dump or governor checks (a CI runner's
# kernel settings are not ours to change), and a fixed time budget per target.
export AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_SHUFFLE_QUEUE=0 AFL_QUIET=1

field() { awk -F' *: *' -v k="$1" '$1==k {print $2}' "$2" 2>/dev/null || true; }

passed=0
printf '%-10s %8s %12s %10s %8s %6s\n' target seconds executions "execs/s" crashes hangs
for t in "${targets[@]}"; do
  rm -rf "${out:?}/$t"
  log="$out/$t.log"
  if ! timeout $((secs + 120)) cargo afl fuzz -V "$secs" -m none -t 2000 \
      -i "fuzz/corpus/$t" -o "$out/$t" -- "$CARGO_TARGET_DIR/release/fuzz_$t" >"$log" 2>&1; then
    echo "fuzz: afl-fuzz failed on $t; last lines of $log:" >&2
    tail -20 "$log" >&2
    continue
  fi
  s="$out/$t/default/fuzzer_stats"
  run=$(($(field last_update "$s") - $(field start_time "$s")))
  crashes=$(field saved_crashes "$s")
  printf '%-10s %8s %12s %10s %8s %6s\n' "$t" "$run" "$(field execs_done "$s")" \
    "$(field execs_per_sec "$s")" "${crashes:-?}" "$(field saved_hangs "$s")"
  if [ "${crashes:-1}" = 0 ]; then
    passed=$((passed + 1))
  else
    mkdir -p "$out/crashes/$t"
    for c in "$out/$t/default/crashes"/id:*; do
      [ -e "$c" ] || continue
      cp "$c" "$out/crashes/$t/"
      echo "  crash: $out/crashes/$t/$(basename "$c")"
    done
  fi
done
# The closing line in the form CI reads: a target passes when AFL ran it and found no crash.
echo "fuzz: $passed passed, $((${#targets[@]} - passed)) failed"
if ((passed != ${#targets[@]})); then
  echo "fuzz: replay a crash with: cargo run -p vrouter-fuzz --example replay -- TARGET FILE" >&2
  exit 1
fi
