#!/usr/bin/env bash
# The censorship lab (README "Censorship lab"), as CI runs it: needs root.
#
# 1. Installs what the lab needs beyond the Rust toolchain, with apt-get, if missing: iproute2
#    (ip, tc), iptables, dnsmasq (dnsmasq-base: the binary without a system service).
# 2. Runs the whole lab: every censorship technique, the timeline, the shutdown.
# 3. Runs it made to fail (one domain left uncensored) and stops one with SIGTERM midway.
# 4. After each: no lab namespace or link is left, and the host's iptables
#    rules are as they were before.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
    echo "tests/lab/run.sh: the lab needs root (network namespaces, iptables): sudo bash tests/lab/run.sh" >&2
    exit 1
fi
missing=()
command -v ip >/dev/null && command -v tc >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --workspace --bins --locked
lab=target/debug/vantage-lab
trap '"$lab" cleanup || true' EXIT

host_rules() { iptables-save | grep -v '^#' || true; }
rules_before=$(host_rules)
check_clean() {
    echo "--- after $1: ip netns list / lab links / host iptables"
    ip netns list
    ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' '; echo
    if ! "$lab" leftovers; then
        echo "tests/lab/run.sh: the lab left the above behind $1" >&2
        exit 1
    fi
    if [ "$(host_rules)" != "$rules_before" ]; then
        echo "tests/lab/run.sh: the host's iptables rules changed $1:" >&2
        diff <(echo "$rules_before") <(host_rules) >&2 || true
        exit 1
    fi
    echo "nothing left from the lab"
}

"$lab" run --dir target/lab
check_clean "a passing run"

echo "tests/lab/run.sh: EXPECTED FAILURE NEXT: a run sabotaged on purpose (tcp-drop.lab left" \
    "uncensored) must fail; the FAILED lines that follow are expected, not a test failure"
if "$lab" run --no-shutdown --sabotage tcp-drop.lab --dir target/lab-sabotage; then
    echo "tests/lab/run.sh: the sabotaged run passed; its checks cannot fail" >&2
    exit 1
fi
echo "tests/lab/run.sh: END OF EXPECTED FAILURE: the sabotaged run failed, as it must"
check_clean "a failing run"

"$lab" run --no-shutdown --dir target/lab-interrupted &
pid=$!
sleep 8
kill -TERM "$pid"
if wait "$pid"; then
    echo "tests/lab/run.sh: the interrupted run claims success" >&2
    exit 1
fi
check_clean "a run stopped by SIGTERM"
