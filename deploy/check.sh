#!/usr/bin/env bash
# Proves that the Debian packaging works: builds the `vantage` and `vantage-aggregator` packages
# with cargo-deb, inspects them, installs them, checks the users, binaries and systemd units they
# set up, and purges them again (also on failure), leaving the machine as it found it.
#
# Usage (as root, from anywhere in a clone):  bash deploy/check.sh [--no-build]
#   --no-build  skip installing cargo-deb and building; check the .deb files already in
#               target/debian (one vantage_*.deb and one vantage-aggregator_*.deb).
#
# It installs what it needs when missing: systemd (for systemd-analyze), adduser and procps (the
# packages depend on them), dpkg-dev (dpkg-shlibdeps, for cargo-deb's $auto dependencies) and
# cargo-deb itself (pinned below). It refuses to run where either package is already installed
# (or removed but not purged), since its final purge would delete that installation's data.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned for reproducible packages; bump deliberately.
CARGO_DEB_VERSION=3.8.0

NO_BUILD=0
for arg in "$@"; do
    case "$arg" in
        --no-build) NO_BUILD=1 ;;
        *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
    esac
done

say() { printf 'check.sh: %s\n' "$*"; }
fail() { printf 'check.sh: FAIL: %s\n' "$*" >&2; exit 1; }

PACKAGES=(vantage vantage-aggregator)
UNITS=(vantage.service vantage-aggregator.service)

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}
# Known to dpkg in any state (installed, half-configured, config-files...).
is_known() {
    local status
    status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) || return 1
    [ "$status" != not-installed ]
}

[ "$(id -u)" -eq 0 ] || fail "run as root: it installs tools with apt-get and the packages with dpkg"
# Written before installing and removed after purging: if it is there, packages found now were
# left by an earlier run of this check that was killed before its trap ran, and may go.
MARKER=/var/tmp/vantage-deploy-check.installed
if [ -e "$MARKER" ]; then
    for p in "${PACKAGES[@]}"; do
        if is_known "$p"; then
            say "purging $p, left by an interrupted earlier run"
            dpkg --purge "$p"
        fi
    done
    rm -f "$MARKER"
fi
for p in "${PACKAGES[@]}"; do
    if is_known "$p"; then
        fail "package $p is already installed here (or removed but not purged); this check would purge it, and its data in /var/lib/$p. Run it where $p is not installed."
    fi
done

# --- (a) tools --------------------------------------------------------------------------------
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v adduser >/dev/null || missing+=(adduser)
[ -x /bin/kill ] || missing+=(procps)
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    say "[a] installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
say "[a] tools: ok (systemd-analyze, adduser, procps, dpkg-shlibdeps present)"

# --- (b) cargo-deb ----------------------------------------------------------------------------
if [ "$NO_BUILD" -eq 0 ]; then
    if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
        say "[b] installing cargo-deb $CARGO_DEB_VERSION"
        cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
    fi
    say "[b] cargo-deb: ok ($(cargo deb --version))"
else
    say "[b] cargo-deb: skipped (--no-build)"
fi

# --- (c) build the packages -------------------------------------------------------------------
if [ "$NO_BUILD" -eq 0 ]; then
    # One cargo build for both binaries compiles the shared dependencies once; cargo-deb then only
    # packages (--no-build). Old packages are removed first so exactly one of each is found below.
    rm -f target/debian/vantage_*.deb target/debian/vantage-aggregator_*.deb
    cargo build --release --locked -p vantage-probe -p vantage-aggregator
    cargo deb --locked --no-build -p vantage-probe
    cargo deb --locked --no-build -p vantage-aggregator
    say "[c] build: ok"
else
    say "[c] build: skipped (--no-build)"
fi

arch=$(dpkg --print-architecture)
find_deb() {
    local matches
    mapfile -t matches < <(compgen -G "target/debian/${1}_*_${arch}.deb" || true)
    [ "${#matches[@]}" -eq 1 ] || fail "expected one target/debian/${1}_*_${arch}.deb, found ${#matches[@]}"
    printf '%s\n' "${matches[0]}"
}
deb_probe=$(find_deb vantage)
deb_aggregator=$(find_deb vantage-aggregator)

# --- (d) inspect the packages -----------------------------------------------------------------
# check_deb DEB PACKAGE BINARY UNIT CONFFILE
check_deb() {
    local deb=$1 package=$2 binary=$3 unit=$4 conffile=$5 info contents depends script text
    # Outputs are captured before grep reads them: `cmd | grep -q` can fail under pipefail when
    # grep exits early and cmd gets SIGPIPE.
    info=$(dpkg-deb --info "$deb")
    contents=$(dpkg-deb --contents "$deb")
    printf '%s\n%s\n' "$info" "$contents"
    [ "$(dpkg-deb --field "$deb" Package)" = "$package" ] || fail "$deb: Package is not $package"
    for path in "./usr/bin/$binary" "./usr/lib/systemd/system/$unit" ".$conffile"; do
        grep -qF " $path" <<<"$contents" || fail "$deb does not contain $path"
    done
    text=$(dpkg-deb --info "$deb" conffiles 2>/dev/null || true)
    grep -qxF "$conffile" <<<"$text" || fail "$deb: $conffile is not a conffile"
    depends=$(dpkg-deb --field "$deb" Depends)
    grep -q 'libc6' <<<"$depends" || fail "$deb: Depends lacks libc6 (did dpkg-shlibdeps run?)"
    grep -q 'adduser' <<<"$depends" || fail "$deb: Depends lacks adduser"
    for script in postinst postrm; do
        text=$(dpkg-deb --info "$deb" "$script" 2>/dev/null) || fail "$deb has no $script"
        ! grep -qF '#DEBHELPER#' <<<"$text" || fail "$deb: #DEBHELPER# left in $script"
        sh -n <<<"$text" || fail "$deb: $script is not valid sh"
        [ "$script" != postinst ] || grep -qF 'adduser --system' <<<"$text" \
            || fail "$deb: postinst does not create the user"
    done
    say "[d] $(basename "$deb"): ok (binary, unit, conffile $conffile, maintainer scripts, Depends: $depends)"
}
check_deb "$deb_probe" vantage vantage vantage.service /etc/vantage/vantage.toml
check_deb "$deb_aggregator" vantage-aggregator vantage-aggregator vantage-aggregator.service \
    /etc/default/vantage-aggregator

# --- (e) install and check --------------------------------------------------------------------
cleanup() {
    local status=$? p
    for p in "${PACKAGES[@]}"; do
        if is_known "$p"; then
            say "cleanup: purging $p"
            dpkg --purge "$p" >/dev/null || status=1
        fi
    done
    if ! is_known vantage && ! is_known vantage-aggregator; then
        rm -f "$MARKER"
    fi
    exit "$status"
}
trap cleanup EXIT
touch "$MARKER"

install_log=$(dpkg -i "$deb_probe" "$deb_aggregator" 2>&1) || { printf '%s\n' "$install_log"; fail "dpkg -i failed"; }
printf '%s\n' "$install_log"
# A maintainer script whose command went missing (a typo, a tool not installed) does not always
# stop dpkg: its shell reports it and carries on.
! grep -q ': not found' <<<"$install_log" || fail "a maintainer script ran a command that does not exist"
for p in "${PACKAGES[@]}"; do
    is_installed "$p" || fail "$p is not installed after dpkg -i"
    getent passwd "$p" >/dev/null || fail "user $p was not created"
    getent group "$p" >/dev/null || fail "group $p was not created"
    owner=$(stat -c '%U:%G %a' "/var/lib/$p")
    [ "$owner" = "$p:$p 700" ] || fail "/var/lib/$p is $owner, expected $p:$p 700"
done
say "[e] install: ok (users vantage and vantage-aggregator, /var/lib directories 0700)"

/usr/bin/vantage --version
/usr/bin/vantage-aggregator --version
say "[e] binaries: ok"

unit_paths=()
for unit in "${UNITS[@]}"; do
    files=$(dpkg -L "${unit%.service}")
    path=$(grep -m 1 "/systemd/system/${unit}\$" <<<"$files" || true)
    [ -f "$path" ] || fail "$unit is not installed"
    unit_paths+=("$path")
done
# systemd-analyze verify checks the units' syntax, their settings, and that the ExecStart= and
# ExecReload= binaries exist (hence after installing). It may also report problems in other
# units on this machine that ours pull in (network-online.target, ...): only lines naming our
# units count.
set +e
verify_output=$(systemd-analyze verify "${unit_paths[@]}" 2>&1)
verify_status=$?
set -e
ours=$(grep -E 'vantage(-aggregator)?\.service' <<<"$verify_output" || true)
if [ -n "$ours" ]; then
    printf '%s\n' "$ours" >&2
    fail "systemd-analyze verify reported problems in our units"
fi
if [ "$verify_status" -ne 0 ]; then
    printf '%s\n' "$verify_output"
    say "[e] note: systemd-analyze verify exited $verify_status for units that are not ours (above)"
fi
say "[e] systemd-analyze verify ${unit_paths[*]}: ok"

# --- (f) purge --------------------------------------------------------------------------------
dpkg --purge "${PACKAGES[@]}"
for p in "${PACKAGES[@]}"; do
    ! is_known "$p" || fail "$p is still known to dpkg after purge"
    ! getent passwd "$p" >/dev/null || fail "user $p is left after purge"
    [ ! -e "/var/lib/$p" ] || fail "/var/lib/$p is left after purge"
done
[ ! -e /etc/vantage/vantage.toml ] || fail "/etc/vantage/vantage.toml is left after purge"
[ ! -e /etc/default/vantage-aggregator ] || fail "/etc/default/vantage-aggregator is left after purge"
say "[f] purge: ok (packages, users, data and conffiles removed)"
say "all packaging checks passed"
