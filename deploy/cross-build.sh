#!/usr/bin/env bash
# Cross-builds `vantage` and `vantage-aggregator` for Raspberry Pi on a Debian (bookworm) x86_64
# host, and, when cargo-deb is installed, their .deb packages.
#
# Usage: bash deploy/cross-build.sh TARGET...
#   aarch64-unknown-linux-gnu       64-bit OS (Debian arm64) on Pi 3, 4, 5, Zero 2 W
#   armv7-unknown-linux-gnueabihf   32-bit OS (armhf) on Pi 2, 3, 4
# ARMv6 boards (Pi 1, Zero, Zero W: arm-unknown-linux-gnueabihf) need another toolchain; see
# deploy/README.md.
#
# Steps, each skipped when already done: install Debian's cross C compiler and C library for the
# target (ring and the bundled SQLite compile C), `rustup target add`, then
# `cargo build --release --locked --target TARGET -p vantage-probe -p vantage-aggregator`, then
# `cargo deb --target TARGET --no-build` for both packages. The linkers are set per target in
# .cargo/config.toml; the C compilers (CC_<target>, AR_<target>) are set here, for this build only.
# Uses sudo for apt-get and dpkg when not run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'cross-build: %s\n' "$*"; }
fail() { printf 'cross-build: error: %s\n' "$*" >&2; exit 1; }

[ "$#" -ge 1 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || fail "not root and no sudo: cannot install the cross compilers"
    SUDO=(sudo)
fi

# target -> Debian architecture and GNU triple of Debian's cross toolchain.
debian_arch() {
    case "$1" in
        aarch64-unknown-linux-gnu) echo arm64 ;;
        armv7-unknown-linux-gnueabihf) echo armhf ;;
        arm-unknown-linux-gnueabihf)
            fail "$1 (ARMv6: Pi 1, Zero, Zero W) is not supported by Debian's armhf cross compiler, which targets ARMv7; see deploy/README.md" ;;
        *) fail "unsupported target $1 (supported: aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" ;;
    esac
}
gnu_triple() {
    case "$1" in
        aarch64-unknown-linux-gnu) echo aarch64-linux-gnu ;;
        armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf ;;
    esac
}

apt_updated=0
apt_install() {
    local missing=() p
    for p in "$@"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    say "installing ${missing[*]}"
    if [ "$apt_updated" -eq 0 ]; then
        "${SUDO[@]}" apt-get update -qq
        apt_updated=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

have_cargo_deb=0
if cargo deb --version >/dev/null 2>&1; then
    have_cargo_deb=1
fi

for target in "$@"; do
    arch=$(debian_arch "$target")
    triple=$(gnu_triple "$target")
    say "== $target (Debian $arch)"

    # 1. Cross C compiler and C library (headers, crt files) for the target.
    apt_install "gcc-$triple" "libc6-dev-$arch-cross"

    # 2. The Rust standard library for the target.
    if command -v rustup >/dev/null; then
        rustup target add "$target" || say "rustup target add $target failed (see above)"
    fi
    libdir=$(rustc --print target-libdir --target "$target")
    if ! compgen -G "$libdir/libstd-*.rlib" >/dev/null; then
        fail "the Rust standard library for $target is not installed ($libdir has no libstd).
  'rustup target add $target' downloads it from the Rust project's server; where that server is
  unreachable, install it on a connected machine with the same toolchain ($(rustc --version))
  and copy $libdir over, or build on the Pi itself."
    fi

    # 3. Build. CC_/AR_ point the cc crate (ring, libsqlite3-sys) at the cross compiler; the
    #    linker comes from .cargo/config.toml.
    env_suffix=${target//-/_}
    export "CC_${env_suffix}=${triple}-gcc" "AR_${env_suffix}=${triple}-ar"
    say "building with CC_${env_suffix}=${triple}-gcc AR_${env_suffix}=${triple}-ar"
    cargo build --release --locked --target "$target" -p vantage-probe -p vantage-aggregator
    say "binaries: target/$target/release/vantage, target/$target/release/vantage-aggregator"

    # 4. Packages.
    if [ "$have_cargo_deb" -eq 1 ]; then
        # cargo-deb's $auto Depends comes from dpkg-shlibdeps, which must know the target's C
        # library as a Debian package: add the architecture and install libc6:<arch> (it only
        # adds files under /usr/lib/<triple>, nothing runs).
        apt_install dpkg-dev
        if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
            say "dpkg --add-architecture $arch (for dpkg-shlibdeps)"
            "${SUDO[@]}" dpkg --add-architecture "$arch"
            apt_updated=0
        fi
        apt_install "libc6:$arch"
        cargo deb --locked --target "$target" --no-build -p vantage-probe
        cargo deb --locked --target "$target" --no-build -p vantage-aggregator
    else
        say "cargo-deb is not installed: no .deb made (cargo install cargo-deb --locked, or bash deploy/check.sh)"
    fi
done
say "done"
