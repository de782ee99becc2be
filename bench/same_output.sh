#!/usr/bin/env bash
# Checks that two sockscope builds report the same figures on the same
# world (e.g. before and after an optimisation): builds a world of
# --tcp sockets (bench/world.py) in a private network namespace and diffs
# `snapshot --json` of both binaries, per source (netlink, procfs),
# without the timestamp and the poll durations. Run as root:
#
#   sudo bench/same_output.sh OLD_SOCKSCOPE NEW_SOCKSCOPE [--tcp 20000]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${1:-} == --inner ]]; then
    old=$2 new=$3 tcp=$4 dir=$5
    [[ $(readlink /proc/self/ns/net) != "${SAME_OUTER_NETNS:-}" ]] || exit 1
    ip link set lo up
    echo "1024 65535" >/proc/sys/net/ipv4/ip_local_port_range
    echo 262144 >/proc/sys/net/ipv4/tcp_max_tw_buckets
    python3 "$ROOT/bench/world.py" --tcp "$tcp" --ready "$dir/ready" &
    world=$!
    trap 'kill $world 2>/dev/null; wait' EXIT
    for _ in $(seq 1200); do [[ -e $dir/ready ]] && break; sleep 0.1; done
    sleep 1.5 # every TIME_WAIT socket older than tcp_tw_reuse_delay (1 s)
    status=0
    for src in netlink procfs; do
        for which in old new; do
            "${!which}" snapshot --json --source "$src" | python3 -c '
import json, sys
d = json.load(sys.stdin)
d.pop("timestamp")
for s in d["sources"]:
    s.pop("duration_seconds")
print(json.dumps(d, indent=1, sort_keys=True))' >"$dir/$which-$src.json"
        done
        if diff "$dir/old-$src.json" "$dir/new-$src.json"; then
            echo "$src: identical ($(wc -l <"$dir/new-$src.json") lines of JSON)"
        else
            status=1
        fi
    done
    exit $status
fi

old=${1:?usage: same_output.sh OLD_SOCKSCOPE NEW_SOCKSCOPE [--tcp N]}
new=${2:?usage: same_output.sh OLD_SOCKSCOPE NEW_SOCKSCOPE [--tcp N]}
tcp=20000
[[ ${3:-} == --tcp ]] && tcp=$4
dir=$(mktemp -d)
chmod 755 "$dir"
export SAME_OUTER_NETNS
SAME_OUTER_NETNS=$(readlink /proc/self/ns/net)
status=0
unshare -n "$0" --inner "$(realpath "$old")" "$(realpath "$new")" "$tcp" "$dir" || status=$?
rm -rf "$dir"
exit $status
