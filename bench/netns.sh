#!/usr/bin/env bash
# `--netns all` at scale: N network namespaces (default 100), each with a
# world of TCP sockets (default 1000, mostly TIME_WAIT) and UNIX sockets
# (default 200) built by bench/world.py, measured three ways in the same
# run:
#   all:      one `sockscope agent --netns all` in the parent namespace:
#             CPU share over --cpu-seconds, peak RSS (VmHWM), and the sum
#             over namespaces of its census time (inet_diag + unix_diag
#             sockscope_source_duration_seconds{netns});
#   walk, ss: examples/netlink_walk.rs (the census's dumps, headers only)
#             and `ss -tan` run in each namespace (nsenter), summed;
#   sidecars: one `sockscope agent` per namespace (the sidecar way), their
#             CPU and RSS summed.
# Run by hand, as root (not in CI):
#
#   sudo bench/netns.sh [--namespaces N] [--tcp N] [--unix N] [--cpu-seconds S] [--out FILE]
#
# Everything runs in a private world (`unshare -n -m -p -f --mount-proc`),
# so the agent discovers exactly the N namespaces and its own. Each phase
# builds its worlds anew (TIME_WAIT lasts 60 s). Prints a Markdown table
# and writes it with the raw figures to --out (default
# bench/results/netns-DATE.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NS=100 TCP=1000 UNIX=200 CPU_SECONDS=20
OUT=$ROOT/bench/results/netns-$(date -u +%Y%m%d-%H%M).md
while (($#)); do
    case $1 in
    --namespaces) NS=$2; shift 2 ;;
    --tcp) TCP=$2; shift 2 ;;
    --unix) UNIX=$2; shift 2 ;;
    --cpu-seconds) CPU_SECONDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --inner) INNER=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/sockscope
WALK=$TARGET/release/examples/netlink_walk

if [[ -z ${INNER:-} ]]; then
    ((EUID == 0)) || { echo "bench/netns.sh: needs root" >&2; exit 1; }
    (cd "$ROOT" && cargo build --release --locked --bin sockscope --example netlink_walk)
    mkdir -p "$(dirname "$OUT")"
    exec unshare -n -m -p -f --mount-proc -- "$0" --inner --namespaces "$NS" --tcp "$TCP" \
        --unix "$UNIX" --cpu-seconds "$CPU_SECONDS" --out "$OUT"
fi

work=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip link set lo up
ulimit -n "$(ulimit -Hn)"
raw=$work/raw
: >"$raw"
rec() { echo "$1=$2" | tee -a "$raw" >&2; }
clk=$(getconf CLK_TCK)
# utime + stime of a process, in seconds
cpu_of() { awk -v hz="$clk" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

# N worlds, each in a namespace of its own, 10 built at a time.
worlds=()
build_worlds() {
    worlds=()
    local i
    for ((i = 0; i < NS; i++)); do
        unshare -n -- sh -c 'ip link set lo up
            echo "1024 65535" > /proc/sys/net/ipv4/ip_local_port_range
            exec python3 "$0" --tcp "$1" --unix "$2" --ports 2 --ips 2 --ready "$3"' \
            "$ROOT/bench/world.py" "$TCP" "$UNIX" "$work/ready.$i" &
        worlds+=($!)
        pids+=($!)
        if ((i % 10 == 9)); then
            local j
            for ((j = i - 9; j <= i; j++)); do
                for _ in $(seq 600); do [[ -e $work/ready.$j ]] && break; sleep 0.1; done
                [[ -e $work/ready.$j ]] || { echo "world $j not built in 60 s" >&2; exit 1; }
            done
        fi
    done
    for ((i = 0; i < NS; i++)); do
        for _ in $(seq 600); do [[ -e $work/ready.$i ]] && break; sleep 0.1; done
    done
}
stop_worlds() {
    local p
    for p in "${worlds[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${worlds[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -f "$work"/ready.*
}

# --- phase all: one agent for every namespace, then the walk and ss
build_worlds
t_built=$(date +%s.%N)
rec world_ns0 "$(cat "$work/ready.0" | tr ' ' ',')"
"$BIN" agent --netns all --web.listen-address 127.0.0.1:9977 --log.level warn 2>"$work/agent.log" &
agent=$!
pids+=($agent)
for _ in $(seq 200); do curl -sf 127.0.0.1:9977/healthz >/dev/null 2>&1 && break; sleep 0.05; done
sleep 2 # the first census of every namespace
c0=$(cpu_of "$agent") t0=$(date +%s.%N)
sleep "$CPU_SECONDS"
c1=$(cpu_of "$agent") t1=$(date +%s.%N)
reported=$(curl -sf 127.0.0.1:9977/metrics | grep -c '^sockscope_netns_info{' || true)
rec agent_all_namespaces_reported "$reported"
rec agent_all_cpu_pct "$(python3 -c "print(round(($c1 - $c0) / ($t1 - $t0) * 100, 2))")"
rec agent_all_hwm_mb "$(python3 -c "print(round($(hwm_kb "$agent") / 1024, 1))")"
kill "$agent"
wait "$agent" 2>/dev/null || true

# The raw walk and ss -tan of the same namespaces in sequence (the
# parent's, which the agent reports too, and the N worlds), three rounds:
# the median of the rounds' sums. One driver, so that process start-up is
# not counted and the rounds finish well within TIME_WAIT's 60 s.
read -r walk_ms ss_ms < <(python3 - "$WALK" $$ "${worlds[@]}" <<'PY'
import re, statistics, subprocess, sys, time
walk, pids = sys.argv[1], sys.argv[2:]
walks, sss = [], []
for _ in range(3):
    w = t_ss = 0.0
    for p in pids:
        out = subprocess.run(["nsenter", "-t", p, "-n", walk, "--iterations", "1"],
                             capture_output=True, text=True, check=True).stdout
        w += float(re.search(r"median_ms=([0-9.]+)", out.splitlines()[-1]).group(1))
        t = time.perf_counter()
        subprocess.run(["nsenter", "-t", p, "-n", "ss", "-tan"], stdout=subprocess.DEVNULL, check=True)
        t_ss += (time.perf_counter() - t) * 1000
    walks.append(w)
    sss.append(t_ss)
print(round(statistics.median(walks), 1), round(statistics.median(sss), 1))
PY
)
rec walk_sum_ms "$walk_ms"
rec ss_tan_sum_ms "$ss_ms"

# The census of every namespace on every poll (--census.cpu-budget-ratio
# 1), in sequence, as the raw walks above: the sum over namespaces of the
# census's inet_diag + unix_diag time, median of 4 polls.
"$BIN" agent --netns all --census.cpu-budget-ratio 1 --web.listen-address 127.0.0.1:9977 \
    --log.level warn 2>>"$work/agent.log" &
agent=$!
pids+=($agent)
for _ in $(seq 200); do curl -sf 127.0.0.1:9977/healthz >/dev/null 2>&1 && break; sleep 0.05; done
census_sums=()
for _ in 1 2 3 4; do
    sleep 1.1
    census_sums+=("$(curl -sf 127.0.0.1:9977/metrics | awk '/^sockscope_source_duration_seconds\{/ && /source="(inet_diag|unix_diag)"/ {s += $2 * 1000} END {print s + 0}')")
done
rec agent_all_census_sum_ms "$(printf '%s\n' "${census_sums[@]}" | sort -n | awk '{a[NR]=$1} END {print (a[int((NR+1)/2)] + a[int(NR/2)+1]) / 2}')"
kill "$agent"
wait "$agent" 2>/dev/null || true

rec phase_all_seconds_since_world "$(python3 -c "import time; print(round(time.time() - $t_built, 1))")"
stop_worlds

# --- phase sidecars: one agent per namespace
build_worlds
agents=()
for i in "${!worlds[@]}"; do
    nsenter -t "${worlds[$i]}" -n "$BIN" agent --web.listen-address 127.0.0.1:9977 --log.level warn 2>/dev/null &
    agents+=($!)
    pids+=($!)
done
sleep 2
sum_cpu() { local a s=0; for a in "${agents[@]}"; do s=$(python3 -c "print($s + $(cpu_of "$a"))"); done; echo "$s"; }
c0=$(sum_cpu) t0=$(date +%s.%N)
sleep "$CPU_SECONDS"
c1=$(sum_cpu) t1=$(date +%s.%N)
hwm=0
for a in "${agents[@]}"; do hwm=$((hwm + $(hwm_kb "$a"))); done
rec sidecars_cpu_pct "$(python3 -c "print(round(($c1 - $c0) / ($t1 - $t0) * 100, 2))")"
rec sidecars_hwm_sum_mb "$(python3 -c "print(round($hwm / 1024, 1))")"
for a in "${agents[@]}"; do kill "$a" 2>/dev/null || true; done
stop_worlds

get() { awk -F= -v k="$1" '$1 == k {print $2}' "$raw"; }
ratio() { python3 -c "print(round($1 / $2, 2))"; }
{
    echo "# bench/netns.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- $NS namespaces x ($TCP TCP sockets, mostly TIME_WAIT, + $UNIX UNIX); kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- agent default settings (1 s polls, census budget 1 % of a core shared by all namespaces); CPU over $CPU_SECONDS s"
    echo
    echo "| | figure | target |"
    echo "|---|---|---|"
    echo "| namespaces reported by \`--netns all\` (N + its own) | $(get agent_all_namespaces_reported) | |"
    echo "| \`--netns all\` agent CPU, % of one core | $(get agent_all_cpu_pct) | ≤ 2 |"
    echo "| \`--netns all\` agent peak RSS (VmHWM), MB | $(get agent_all_hwm_mb) | ≤ 16 |"
    echo "| one agent per namespace (sidecars): CPU summed, % of one core | $(get sidecars_cpu_pct) | |"
    echo "| one agent per namespace: peak RSS summed, MB | $(get sidecars_hwm_sum_mb) | |"
    echo "| sum over namespaces of the census time (inet_diag + unix_diag; a census every poll, median of 4 polls), ms | $(get agent_all_census_sum_ms) | |"
    echo "| raw walk of the same namespaces in sequence (netlink_walk, N + the parent, median of 3 rounds), ms | $(get walk_sum_ms) | |"
    echo "| census sum / raw walk sum | $(ratio "$(get agent_all_census_sum_ms)" "$(get walk_sum_ms)") | ≤ 1.3 |"
    echo "| \`ss -tan\` in the same namespaces in sequence, wall (median of 3 rounds), ms | $(get ss_tan_sum_ms) | |"
    echo "| census sum / \`ss -tan\` sum | $(ratio "$(get agent_all_census_sum_ms)" "$(get ss_tan_sum_ms)") | |"
    echo "| \`--netns all\` CPU / sidecars CPU | $(ratio "$(get agent_all_cpu_pct)" "$(get sidecars_cpu_pct)") | |"
    echo
    echo '```'
    cat "$raw"
    echo '```'
} >"$OUT"
cat "$OUT"
echo "written to $OUT" >&2
