#!/usr/bin/env bash
# Man pages and shell completions of every packaged binary, from each binary's own clap
# definition (vrouter-clidocs): runs each with VROUTER_GENERATE_DOCS=<dir>/gen. The package's
# assets take them from there (target/<profile>/gen/...).
#   scripts/gen-docs.sh [BINARY_DIR]     (default: target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/release}"
rm -rf "$dir/gen"
for b in vrouter-dp vrouter-agent vrctl vrouter-status vrouter-shim vrouter-xenstored; do
  [ -x "$dir/$b" ] || { echo "gen-docs: $dir/$b missing (build the workspace's binaries first)" >&2; exit 1; }
  VROUTER_GENERATE_DOCS="$dir/gen" "$dir/$b" >/dev/null
done
echo "gen-docs: man pages and completions in $dir/gen"
