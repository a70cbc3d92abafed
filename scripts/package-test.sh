#!/usr/bin/env bash
# Builds the `vrouter` .deb from the binaries the test run already built (debug profile: no
# second release build in CI), installs it with dpkg into an empty root, checks the installed
# files and runs `systemd-analyze verify` on the units. Exits non-zero on the first failure.
# Then builds the RPM, lists it and installs it with rpm into another empty root.
# Needs cargo-deb and cargo-generate-rpm (scripts/install-deps.sh installs them), dpkg, rpm and
# systemd.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
command -v cargo-deb >/dev/null || fail "cargo-deb missing (scripts/install-deps.sh installs it)"
command -v systemd-analyze >/dev/null || fail "systemd-analyze missing (apt-get install systemd)"
command -v cargo-generate-rpm >/dev/null || fail "cargo-generate-rpm missing (scripts/install-deps.sh installs it)"
command -v rpm >/dev/null || fail "rpm missing (apt-get install rpm)"

t0=$(date +%s)
cargo build --quiet -p vrouter-dataplane -p vrouter-agent -p vrouter-shim -p vrouter-xen --bins
./scripts/gen-docs.sh target/debug >/dev/null
work=$(mktemp -d /tmp/p21-pkg.XXXXXX)
trap 'rm -rf "$work"' EXIT
# dev profile: the binaries the test run built (cargo-deb warns that it is meant for releases).
cargo deb -p vrouter-dataplane --no-build --profile dev --fast -o "$work/" >"$work/deb.log" 2>&1 \
  || { cat "$work/deb.log" >&2; fail "cargo deb"; }
deb=$(ls "$work"/vrouter_*.deb)

root="$work/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
# The empty root has none of the dependencies (libc6, systemd): installed anyway, checked below.
# The maintainer scripts run outside the root (it has no shell) with DPKG_ROOT set: they see no
# running systemd there and do nothing, but they must exit 0.
dpkg --root="$root" --force-depends --force-script-chrootless -i "$deb" >"$work/dpkg.log" 2>&1 \
  || { cat "$work/dpkg.log" >&2; fail "dpkg -i"; }
dpkg --root="$root" -s vrouter | grep -q '^Status: install ok installed' || fail "not installed"

for m in postinst prerm postrm; do
  [ -x "$root/var/lib/dpkg/info/vrouter.$m" ] || fail "maintainer script $m missing"
done
[ -f "$root/usr/share/doc/vrouter/install.md" ] || fail "install guide missing"
for f in usr/bin/vrouter-dp usr/bin/vrouter-agent usr/bin/vrctl usr/bin/vrouter-status usr/bin/vrouter-shim \
         usr/bin/vrouter-xenstored etc/xapi.d/vif-hotplug; do
  [ -x "$root/$f" ] || fail "/$f missing or not executable"
done
for b in vrouter-dp vrouter-agent vrctl vrouter-status vrouter-shim vrouter-xenstored; do
  "$root/usr/bin/$b" --version | grep -q "^$b " || fail "/usr/bin/$b --version"
  grep -q "^\.TH $b 1" "$root/usr/share/man/man1/$b.1" || fail "man page of $b"
  grep -q -- "--help" "$root/usr/share/bash-completion/completions/$b" || fail "bash completion of $b"
  [ -f "$root/usr/share/zsh/vendor-completions/_$b" ] || fail "zsh completion of $b"
  [ -f "$root/usr/share/fish/vendor_completions.d/$b.fish" ] || fail "fish completion of $b"
done
for c in /etc/vrouter/dp.conf /etc/vrouter/agent.env /etc/vrouter/agent.toml \
         /etc/vrouter/shim.env /etc/xapi.d/vif-hotplug; do
  grep -qx "$c" "$root/var/lib/dpkg/info/vrouter.conffiles" || fail "$c is not a conffile"
done
cmp -s "$root/etc/xapi.d/vif-hotplug" xen/scripts/vif-vrouter || fail "the hook is not vif-vrouter"
# The default configs pass the daemons' own checks.
"$root/usr/bin/vrouter-dp" --config "$root/etc/vrouter/dp.conf" --check-config >/dev/null \
  || fail "default dp.conf"
"$root/usr/bin/vrouter-agent" --config "$root/etc/vrouter/agent.toml" \
  --controller http://127.0.0.1:8082 --check-config >/dev/null || fail "default agent.toml"

# systemd-analyze verify in the root: it resolves ExecStart= paths and the units' dependencies
# there, so the root gets what the package depends on: systemd's own units and kill(1).
units=(vrouter-dp vrouter-agent vrouter-shim vrouter-xenstored)
for u in "${units[@]}"; do
  [ -f "$root/lib/systemd/system/$u.service" ] || fail "$u.service missing"
done
cp -n -r /lib/systemd/system/. "$root/lib/systemd/system/"
mkdir -p "$root/bin" && cp /bin/kill "$root/bin/kill"
paths=()
for u in "${units[@]}"; do paths+=("$root/lib/systemd/system/$u.service"); done
SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --root="$root" --man=no "${paths[@]}" \
  >"$work/verify.log" 2>&1 || { cat "$work/verify.log" >&2; fail "systemd-analyze verify"; }
if grep -q . "$work/verify.log"; then cat "$work/verify.log" >&2; fail "systemd-analyze warnings"; fi

# The RPM (XCP-ng/XenServer dom0) from the same binaries: its file list and config files, then
# installed with rpm into an empty root (no dependencies, no scriptlets: the root has no
# systemd), where every binary runs. Uncompressed: the debug binaries take minutes to compress.
cargo generate-rpm -p dataplane --profile dev --payload-compress none -o "$work/" >"$work/rpm.log" 2>&1 \
  || { cat "$work/rpm.log" >&2; fail "cargo generate-rpm"; }
rpmfile=$(ls "$work"/vrouter-*.rpm)
rpm -qlp "$rpmfile" >"$work/rpm-files" 2>/dev/null || fail "rpm -qlp"
rpm -qp --configfiles "$rpmfile" >"$work/rpm-config" 2>/dev/null || fail "rpm --configfiles"
rpm -qp --scripts "$rpmfile" >"$work/rpm-scripts" 2>/dev/null || fail "rpm --scripts"
for f in /usr/bin/vrouter-dp /usr/bin/vrouter-agent /usr/bin/vrctl /usr/bin/vrouter-status \
         /usr/bin/vrouter-shim /usr/bin/vrouter-xenstored /etc/xapi.d/vif-hotplug \
         /usr/share/doc/vrouter/install.md /usr/share/man/man1/vrctl.1; do
  grep -qx "$f" "$work/rpm-files" || fail "RPM lacks $f"
done
for u in "${units[@]}"; do
  grep -qx "/usr/lib/systemd/system/$u.service" "$work/rpm-files" || fail "RPM lacks $u.service"
done
for c in /etc/vrouter/dp.conf /etc/vrouter/agent.env /etc/vrouter/agent.toml \
         /etc/vrouter/shim.env /etc/xapi.d/vif-hotplug; do
  grep -qx "$c" "$work/rpm-config" || fail "$c is not an RPM config file"
done
grep -q "systemctl daemon-reload" "$work/rpm-scripts" || fail "RPM scriptlets missing"
rroot="$work/rpmroot"
mkdir -p "$rroot"
rpm --root "$rroot" --initdb 2>/dev/null || fail "rpm --initdb"
rpm --root "$rroot" --nodeps --noscripts -i "$rpmfile" >"$work/rpm-i.log" 2>&1 \
  || { cat "$work/rpm-i.log" >&2; fail "rpm -i"; }
for b in vrouter-dp vrouter-agent vrctl vrouter-status vrouter-shim vrouter-xenstored; do
  "$rroot/usr/bin/$b" --version | grep -q "^$b " || fail "RPM: /usr/bin/$b --version"
done
echo "package-test: ok: $(basename "$deb") and $(basename "$rpmfile") installed and verified in $(( $(date +%s) - t0 )) s"
