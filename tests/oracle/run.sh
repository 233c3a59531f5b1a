#!/usr/bin/env bash
# Independent oracle test of the packet classifier (docs/classifier.md):
# generate a varied pcap, classify it with the C++ tool and with the Python oracle,
# compare packet by packet. Exit status: the oracle's self-test's when it fails, else
# compare.py's (0 = all agree, >= 10,000 packets).
#
#   VIPFARMCTL=build/vipfarmctl SEED=1 COUNT=12000 tests/oracle/run.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
py=/usr/bin/python3            # Debian's python3: the one with scapy

ctl=${VIPFARMCTL:-$root/build/vipfarmctl}
case $ctl in
    /*) ;;
    */*) ctl=$PWD/$ctl ;;          # relative to where we were started
    *) ctl=$(command -v "$ctl" || echo "$ctl") ;;
esac
if [[ ! -x $ctl ]]; then
    echo "run.sh: $ctl is not an executable (set VIPFARMCTL)" >&2
    exit 1
fi

config=$here/oracle.toml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# the oracle's own hand-worked cases, and its check that both directions of gateway
# flows land in one bucket wherever docs/classifier.md §5 says they do
"$py" -B "$here/oracle.py" --config "$config" --selftest

"$py" "$here/gen_pcap.py" --config "$config" --seed "${SEED:-1}" \
    --count "${COUNT:-12000}" --ambiguous -o "$tmp/oracle.pcap"

set +e
"$ctl" owner --config "$config" --pcap "$tmp/oracle.pcap" --json \
    | "$py" "$here/compare.py" --config "$config" --pcap "$tmp/oracle.pcap" -
status=("${PIPESTATUS[@]}")
set -e
if [[ ${status[0]} -ne 0 ]]; then
    echo "run.sh: $ctl exited with status ${status[0]}" >&2
fi
exit "${status[1]}"
