#!/usr/bin/env bash
# The eBPF event source's cost: the agent's CPU (utime + stime of the
# agent, plus the programs' kernel time, which the kernel charges to the
# process whose socket changed state) with --ebpf on vs off, under a paced
# loopback connect load of 1k, 5k and 20k connects a second
# (examples/connect_load.rs: connect, accept, reset; no TIME_WAIT, so the
# census is the same size in both modes), each in a fresh private network
# namespace; and the per-event cost (run_time_ns / run_cnt). Run by hand,
# as root (not in CI):
#
#   sudo bench/ebpf.sh [--rates "1000 5000 20000"] [--seconds 20] [--reps 3]
#
# Prints a Markdown table (medians over --reps) and writes it, with every
# run's figures, to bench/results/ebpf-DATE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rates="1000 5000 20000"
seconds=20
reps=3
while (($#)); do
  case $1 in
    --rates) rates=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
((EUID == 0)) || { echo "bench/ebpf.sh: needs root (unshare -n, bpf)" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-target}
# Built apart: building them together unifies the dev-dependencies'
# features into the agent (BENCHMARKS.md, "the example-built binary trap").
cargo build --release --locked --bin sockscope >/dev/null 2>&1
cargo build --release --locked --example connect_load >/dev/null 2>&1
agent=$target/release/sockscope
load=$target/release/examples/connect_load
mkdir -p bench/results
out=bench/results/ebpf-$(date -u +%Y%m%d-%H%M%S).md
hz=$(getconf CLK_TCK)

# One run in a fresh namespace: prints "agent_cpu_s prog_s prog_runs rate".
one() {
  local mode=$1 rate=$2
  unshare -n bash -s "$agent" "$load" "$mode" "$rate" "$seconds" "$hz" <<'EOF'
set -euo pipefail
agent=$1 load=$2 mode=$3 rate=$4 seconds=$5 hz=$6
ip link set lo up
flags=(--ebpf "$mode" --web.listen-address 127.0.0.1:9977 --log.level warn)
[[ $mode == on ]] && flags+=(--ebpf.kernel-stats)
"$agent" agent "${flags[@]}" &
pid=$!
for _ in $(seq 100); do curl -sf -o /dev/null 127.0.0.1:9977/metrics && break; sleep 0.1; done
metric() { curl -sf 127.0.0.1:9977/metrics | awk -v n="$1" '$1 == n {print $2}'; }
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
run0=$(metric sockscope_ebpf_program_run_seconds_total); cnt0=$(metric sockscope_ebpf_program_runs_total)
t0=$(ticks)
reached=$("$load" "$rate" "$seconds" | sed -n 's/.*: \([0-9]*\)\/s$/\1/p')
sleep 1.1  # one poll more: the agent reads the map after the load
t1=$(ticks)
run1=$(metric sockscope_ebpf_program_run_seconds_total); cnt1=$(metric sockscope_ebpf_program_runs_total)
kill "$pid"; wait "$pid" 2>/dev/null || true
awk -v a="$t0" -v b="$t1" -v hz="$hz" -v r0="${run0:-0}" -v r1="${run1:-0}" -v c0="${cnt0:-0}" -v c1="${cnt1:-0}" -v reached="$reached" \
  'BEGIN {printf "%.4f %.6f %d %s\n", (b - a) / hz, r1 - r0, c1 - c0, reached}'
EOF
}

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

{
  echo "# bench/ebpf.sh $(date -u +%Y-%m-%d) $(uname -r), $(nproc) CPUs, ${seconds} s per run, ${reps} runs"
  echo
  echo "| connects/s | reached | agent CPU, events off | agent CPU, events on | programs' kernel time | on − off (% of a core) | ns per program run | runs per connect |"
  echo "|---|---|---|---|---|---|---|---|"
} >"$out.tmp"
raw=()
for rate in $rates; do
  offs=() ons=() progs=() nspr=() rpc=() reach=()
  for ((i = 0; i < reps; i++)); do
    read -r cpu _ _ r < <(one off "$rate")
    offs+=("$cpu"); reach+=("$r")
    raw+=("off $rate cpu=${cpu}s reached=$r/s")
    read -r cpu prog runs r < <(one on "$rate")
    ons+=("$(awk -v c="$cpu" -v p="$prog" 'BEGIN {print c + p}')")
    progs+=("$prog")
    nspr+=("$(awk -v p="$prog" -v n="$runs" 'BEGIN {print n ? p * 1e9 / n : 0}')")
    rpc+=("$(awk -v n="$runs" -v r="$rate" -v s="$seconds" 'BEGIN {print n / (r * s)}')")
    raw+=("on  $rate cpu=${cpu}s prog=${prog}s runs=$runs reached=$r/s")
  done
  m_off=$(printf '%s\n' "${offs[@]}" | median)
  m_on=$(printf '%s\n' "${ons[@]}" | median)
  m_prog=$(printf '%s\n' "${progs[@]}" | median)
  m_ns=$(printf '%s\n' "${nspr[@]}" | median)
  m_rpc=$(printf '%s\n' "${rpc[@]}" | median)
  m_reach=$(printf '%s\n' "${reach[@]}" | median)
  awk -v rate="$rate" -v reach="$m_reach" -v off="$m_off" -v on="$m_on" -v prog="$m_prog" -v ns="$m_ns" -v rpc="$m_rpc" -v s="$seconds" \
    'BEGIN {printf "| %d | %d | %.2f %% | %.2f %% | %.2f %% | %+.2f | %.0f | %.1f |\n", rate, reach, 100 * off / (s + 1.1), 100 * on / (s + 1.1), 100 * prog / (s + 1.1), 100 * (on - off) / (s + 1.1), ns, rpc}' >>"$out.tmp"
done
{
  cat "$out.tmp"
  echo
  echo "CPU shares are of one core over the load plus one poll (${seconds} s + 1.1 s). Every run:"
  echo
  printf -- '- %s\n' "${raw[@]}"
} >"$out"
rm -f "$out.tmp"
cat "$out"
