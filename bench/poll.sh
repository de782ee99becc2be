#!/usr/bin/env bash
# The poller against ss and node_exporter, on worlds of 10k, 35k and 100k
# TCP sockets (mostly TIME_WAIT) plus 10k UNIX sockets, each built in a
# private network namespace. Run by hand, as root (not in CI):
#
#   sudo bench/poll.sh                          # all sizes, 10 repetitions
#   sudo bench/poll.sh --sizes 35000 --reps 5   # one size, quicker
#
# Other options: --unix N (UNIX sockets, default 10000), --cpu-seconds S
# (default 30), --out FILE, --no-build, --wait-quiet PCT (before each
# phase, wait up to 10 min for 5 s during which the CPUs were less than
# PCT % busy and other namespaces held fewer than 2000 TIME_WAIT sockets:
# other work on the machine skews every figure, and every dump walks the
# sockets of all namespaces, which share the kernel's hash), --bin PATH
# (measure another sockscope binary, e.g. an older build; implies
# --no-build), --walk-args ARGS (extra netlink_walk flags, e.g.
# "--unix-show 29" for an older build's unix_diag request).
#
# It builds the release binary and the raw-walk example first (honours
# CARGO_TARGET_DIR), prints a Markdown table and writes it, with the raw
# per-phase figures, to --out (default bench/results/poll-DATE.md). Figures
# are medians over --reps repetitions; see BENCHMARKS.md for how to read
# them.
#
# Each size runs two phases, each in a fresh namespace (TIME_WAIT lasts
# 60 s, so a world is good for one phase; leaving the namespace purges its
# TIME_WAIT sockets at once):
#   peers: sockscope snapshot --timing (one-shots), the raw netlink walk
#          (examples/netlink_walk.rs: the census's dumps, headers only,
#          without and with --bound-inactive;
#          back to back, 1 s apart like the agent, one dump per family,
#          listeners only), ss -tan,
#          ss -xa, cat /proc/net/tcp{,6}, snapshot --source procfs, and
#          node_exporter's tcpstat collector scrape duration;
#   agent: sockscope agent with default settings (1 s polls; the census
#          of every socket within a 1 % CPU budget, listener-only dumps
#          between): CPU share (utime+stime over --cpu-seconds), the
#          census's sockscope_source_duration_seconds summed over its sources
#          (one scrape every 3 s during that window), the listener-only
#          tick's, sockscope_census_interval_seconds, peak RSS (VmHWM);
#   agentevery: the same with --census.cpu-budget-ratio 1 (a census on
#          every poll, as before the census schedule).
#
# Needs: unshare, ip, ss, python3, curl; hyperfine (apt-get install -y
# hyperfine; else a slower Python timing loop is used); node_exporter
# (apt-get install -y prometheus-node-exporter; else its rows stay empty).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/bench/poll.sh"

if [[ ${1:-} == --inner ]]; then
    shift
    # Sysctls and sockets below belong to a private namespace only: the
    # outer run passes its own namespace, which must differ from ours.
    netns=$(readlink /proc/self/ns/net)
    if [[ -z ${POLL_OUTER_NETNS:-} || $netns == "$POLL_OUTER_NETNS" ]]; then
        echo "--inner is run by bench/poll.sh inside unshare -n only" >&2
        exit 1
    fi
    trap 'echo "bench/poll.sh --inner $*: line $LINENO failed (exit $?)" >&2' ERR
    PHASE=$1 SIZE=$2 UNIX=$3 REPS=$4 CPU_SECONDS=$5 OUT=$6 BIN=$7 WALK=$8 WALK_ARGS=$9
    R="$OUT/$SIZE.$PHASE"
    : >"$R"
    rec() { echo "$1=$2" >>"$R"; }
    recline() { # prefix, "k=v k=v ..."
        local kv
        for kv in $2; do echo "$1$kv" >>"$R"; done
    }
    pids=()
    cleanup() {
        local p
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
    }
    trap cleanup EXIT

    ip link set lo up
    echo "1024 65535" >/proc/sys/net/ipv4/ip_local_port_range
    echo 262144 >/proc/sys/net/ipv4/tcp_max_tw_buckets
    # connect() must not take the ports node_exporter and the agent listen
    # on (the world's clients use the whole range)
    echo 9100,9977 >/proc/sys/net/ipv4/ip_local_reserved_ports
    ulimit -n "$(ulimit -Hn)"
    rec load_start "$(cut -d' ' -f1 /proc/loadavg)"
    cpu_stat() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat; } # busy idle
    read -r busy0 idle0 <<<"$(cpu_stat)"
    # Sockets of other namespaces share the kernel's established hash and
    # are walked by every dump: note how many there were.
    rec slab_tw_before "$(awk '$1=="tw_sock_TCP"{print $2}' /proc/slabinfo)"

    ready="$OUT/$SIZE.$PHASE.ready"
    python3 "$ROOT/bench/world.py" --tcp "$SIZE" --unix "$UNIX" --ready "$ready" &
    pids+=($!)
    for _ in $(seq 1200); do [[ -e $ready ]] && break; sleep 0.1; done
    [[ -e $ready ]] || { echo "world of $SIZE sockets not built in 120 s" >&2; exit 1; }
    world_t0=$(date +%s.%N)
    recline world_ "$(cat "$ready")"
    counts() { # TCP sockets by state and UNIX sockets, as ss sees them
        ss -tanH | awk '{n[$1]++} END {printf "tw=%d est=%d listen=%d total=%d", n["TIME-WAIT"], n["ESTAB"], n["LISTEN"], NR}'
        printf ' unix=%d' "$(ss -xaH | wc -l)"
    }
    rec counts_start "$(counts | tr ' ' ',')"

    # wall-clock median of a command, in ms
    wall() {
        local name=$1
        shift
        if command -v hyperfine >/dev/null; then
            hyperfine -N --runs "$REPS" --warmup 2 --export-json "$OUT/h.json" "$*" >/dev/null 2>&1
            rec "$name" "$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["results"][0]["median"]*1e3, 3))' "$OUT/h.json")"
            # CPU time (user + system, mean per run): not inflated by other
            # load the way wall time is
            rec "${name%_ms}_cpu_ms" "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print(round((r["user"]+r["system"])*1e3, 3))' "$OUT/h.json")"
        else
            rec "$name" "$(python3 - "$REPS" "$@" <<'EOF'
import statistics, subprocess, sys, time
reps, cmd = int(sys.argv[1]), sys.argv[2:]
ts = []
for i in range(reps + 2):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    if i >= 2:
        ts.append(time.perf_counter() - t)
print(round(statistics.median(ts) * 1e3, 3))
EOF
)"
        fi
    }
    task_cpu_ms() { # CPU time of every thread of a process, ms (schedstat: ns)
        { cat /proc/"$1"/task/*/schedstat 2>/dev/null || true; } | awk '{s += $1} END {printf "%.3f", s / 1e6}'
    }
    median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(round(statistics.median(v), 3) if v else "")' "$@"; }
    # Poll timing lines of `snapshot --timing`: "  source   1.234 ms"
    snapshot_totals() { # $1: extra flags
        local totals=() inet=() unixd=() t
        for _ in $(seq 2); do "$BIN" snapshot --timing $1 >/dev/null; done
        for _ in $(seq "$REPS"); do
            t=$("$BIN" snapshot --timing $1 | awk '/^Poll timing/{p=1} p && NF==3 {v[$1]=$2} END {printf "%s %s %s", v["total"], v["inet_diag"]+v["inet_diag_ipv4"]+v["inet_diag_ipv6"]+v["proc_net_tcp"]+v["proc_net_tcp6"], v["unix_diag"]+v["proc_net_unix"]}')
            read -r a b c <<<"$t"
            totals+=("$a") inet+=("$b") unixd+=("$c")
        done
        echo "$(median "${totals[@]}") $(median "${inet[@]}") $(median "${unixd[@]}")"
    }

    if [[ $PHASE == peers ]]; then
        read -r a b c <<<"$(snapshot_totals "")"
        rec snapshot_total_ms "$a"
        rec snapshot_tcp_ms "$b"
        rec snapshot_unix_ms "$c"
        wall snapshot_wall_ms "$BIN" snapshot
        recline walk_ "$("$WALK" --iterations "$REPS" $WALK_ARGS | tail -1)"
        recline walkpf_ "$("$WALK" --iterations "$REPS" --per-family $WALK_ARGS | tail -1)"
        # with bound-only sockets (TCPF_BOUND_INACTIVE), as the census asks
        # on its own cadence (and as every census did before 0.2.0)
        recline walkbound_ "$("$WALK" --iterations "$REPS" --bound-inactive $WALK_ARGS | tail -1)"
        # at the agent's cadence: after a 1 s sleep the kernel's socket
        # structures are out of the CPU caches (REPS seconds)
        recline walkcold_ "$("$WALK" --iterations "$REPS" --interval-ms 1000 $WALK_ARGS | tail -1)"
        # what a tick that samples only the listeners would cost
        recline walklisten_ "$("$WALK" --iterations "$REPS" --listeners-only $WALK_ARGS | tail -1)"
        wall ss_tan_ms ss -tan
        wall ss_xa_ms ss -xa
        wall cat_proc_tcp_ms cat /proc/net/tcp /proc/net/tcp6
        read -r a b c <<<"$(snapshot_totals "--source procfs")"
        rec procfs_total_ms "$a"
        rec procfs_tcp_ms "$b"
        rec procfs_unix_ms "$c"

        NE=$(command -v prometheus-node-exporter || command -v node_exporter || true)
        if [[ -n $NE ]]; then
            rec node_exporter_version "$("$NE" --version 2>&1 | head -1 | awk '{print $3}')"
            "$NE" --collector.disable-defaults --collector.tcpstat \
                --web.listen-address 127.0.0.1:9100 >"$OUT/node_exporter.$SIZE.log" 2>&1 &
            ne=$!
            pids+=("$ne")
            for _ in $(seq 300); do curl -sf -o /dev/null 127.0.0.1:9100/metrics && break; sleep 0.1; done
            if kill -0 "$ne" 2>/dev/null; then
                ds=()
                for i in $(seq $((REPS + 2))); do
                    ((i == 3)) && c0=$(task_cpu_ms "$ne")
                    d=$( (curl -sf 127.0.0.1:9100/metrics || true) | awk '/^node_scrape_collector_duration_seconds\{collector="tcpstat"\}/ {print $2 * 1000}')
                    ((i > 2)) && [[ -n $d ]] && ds+=("$d")
                done
                c1=$(task_cpu_ms "$ne")
                rec node_tcpstat_ms "$(median "${ds[@]}")"
                rec node_scrape_cpu_ms "$(python3 -c "print(round(($c1 - $c0) / $REPS, 3))")"
                rec node_exporter_vmhwm_kb "$(awk '/VmHWM/{print $2}' /proc/$ne/status)"
            else
                echo "node_exporter exited: $(tail -3 "$OUT/node_exporter.$SIZE.log")" >&2
            fi
        fi
    else
        agent_args=()
        [[ $PHASE == agentevery ]] && agent_args=(--census.cpu-budget-ratio 1)
        "$BIN" agent --web.listen-address 127.0.0.1:9977 "${agent_args[@]}" >/dev/null 2>&1 &
        agent=$!
        pids+=("$agent")
        for _ in $(seq 300); do curl -sf -o /dev/null 127.0.0.1:9977/metrics && break; sleep 0.1; done
        sleep 3
        ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
        c0=$(ticks) t0=$(date +%s.%N) s0=$(task_cpu_ms "$agent")
        totals=() inet=() unixd=() listen=() census_iv=()
        end=$(python3 -c "print($t0 + $CPU_SECONDS)")
        while python3 -c "import sys,time; sys.exit(time.time() + 3 > $end)"; do
            sleep 3
            # the census's sources (carried between censuses), and the
            # listener-only dumps of a poll without a census
            # (sockscope_poll_duration_seconds before 0.2.0, for --bin OLD)
            t=$( (curl -sf 127.0.0.1:9977/metrics || true) | awk '/^sockscope_(source|poll)_duration_seconds\{/ {
                    split($1, a, "\""); v[a[2]] = $2 * 1000
                    if (a[2] ~ /_listen$/) l += $2 * 1000; else s += $2 * 1000 }
                /^sockscope_census_interval_seconds / { iv = $2 }
                END {printf "%s %s %s %s %s", s, v["inet_diag"] + v["inet_diag_ipv4"] + v["inet_diag_ipv6"], v["unix_diag"], l + 0, iv}')
            read -r a b c d e <<<"$t"
            totals+=("$a") inet+=("$b") unixd+=("$c")
            [[ $d != 0 ]] && listen+=("$d")
            census_iv+=("$e")
        done
        sleep "$(python3 -c "import time; print(max(0, $end - time.time()))")"
        c1=$(ticks) t1=$(date +%s.%N) s1=$(task_cpu_ms "$agent")
        rec agent_cpu_pct "$(python3 -c "print(round(100 * ($c1 - $c0) / $(getconf CLK_TCK) / ($t1 - $t0), 3))")"
        # the same from the threads' schedstat (ns): CPU ms per second,
        # i.e. per poll at the 1 s interval, scrapes included
        rec agent_cpu_ms_per_s "$(python3 -c "print(round(($s1 - $s0) / ($t1 - $t0), 3))")"
        rec agent_cpu_window_s "$(python3 -c "print(round($t1 - $t0, 1))")"
        rec agent_poll_ms "$(median "${totals[@]}")"
        rec agent_poll_tcp_ms "$(median "${inet[@]}")"
        rec agent_poll_unix_ms "$(median "${unixd[@]}")"
        rec agent_polls_sampled "${#totals[@]}"
        ((${#listen[@]})) && rec agent_listen_tick_ms "$(median "${listen[@]}")"
        rec agent_census_interval_s "$(median "${census_iv[@]}")"
        rec agent_vmhwm_kb "$(awk '/VmHWM/{print $2}' /proc/$agent/status)"
    fi
    rec counts_end "$(counts | tr ' ' ',')"
    rec world_age_s "$(python3 -c "print(round($(date +%s.%N) - $world_t0, 1))")"
    rec load_end "$(cut -d' ' -f1 /proc/loadavg)"
    read -r busy1 idle1 <<<"$(cpu_stat)"
    # share of both CPUs busy during the phase, the benchmark included
    rec machine_busy_pct "$(python3 -c "print(round(100 * ($busy1 - $busy0) / max(1, $busy1 - $busy0 + $idle1 - $idle0)))")"
    exit 0
fi

# ---- outer: build, run every phase in its own namespace, report ----
SIZES="10000 35000 100000"
UNIX=10000
REPS=10
CPU_SECONDS=30
OUTFILE=""
BUILD=1
QUIET=""
BIN=""
WALK_ARGS=""
while (($#)); do
    case $1 in
    --sizes) SIZES=$2; shift 2 ;;
    --unix) UNIX=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --cpu-seconds) CPU_SECONDS=$2; shift 2 ;;
    --out) OUTFILE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --wait-quiet) QUIET=$2; shift 2 ;;
    --bin) BIN=$2; BUILD=0; shift 2 ;;
    --walk-args) WALK_ARGS=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $(id -u) == 0 ]] || { echo "run as root (private network namespaces)" >&2; exit 1; }
for t in unshare ip ss python3 curl; do
    command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }
done
command -v hyperfine >/dev/null || echo "note: no hyperfine; timing commands with a Python loop" >&2

cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if ((BUILD)); then
    # Two builds: an example pulls in the dev-dependencies, whose features
    # cargo unifies into the shared crates, and a binary built together
    # with it is not the one users build (measured: +250 KB of Unicode
    # tables, +1.4 MB peak RSS).
    cargo build --release --bin sockscope
    cargo build --release --example netlink_walk
fi
BIN=${BIN:-$TARGET/release/sockscope}
WALK=$TARGET/release/examples/netlink_walk
[[ -x $BIN && -x $WALK ]] || { echo "missing $BIN or $WALK" >&2; exit 1; }

STAMP=$(date +%Y%m%d-%H%M%S)
OUTFILE=${OUTFILE:-$ROOT/bench/results/poll-$STAMP.md}
mkdir -p "$(dirname "$OUTFILE")"
RAW=$(mktemp -d /tmp/sockscope-poll.XXXXXX)
chmod 755 "$RAW"
{
    echo "date=$(date -Iseconds)"
    echo "cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "cpus=$(nproc)"
    echo "kernel=$(uname -r)"
    echo "sockscope=$("$BIN" --version 2>/dev/null | awk '{print $2}') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes'))"
    echo "bin=$BIN $WALK_ARGS"
    echo "rustc=$(rustc --version 2>/dev/null | awk '{print $2}')"
    echo "ss=$(ss -V | awk '{print $NF}')"
    echo "hyperfine=$(hyperfine --version 2>/dev/null | awk '{print $2}')"
    echo "reps=$REPS"
    echo "cpu_seconds=$CPU_SECONDS"
} >"$RAW/machine"

export POLL_OUTER_NETNS
POLL_OUTER_NETNS=$(readlink /proc/self/ns/net)
for size in $SIZES; do
    for phase in peers agent agentevery; do
        if [[ -n $QUIET ]]; then # wait up to 10 min for a quiet machine
            for _ in $(seq 120); do
                read -r b0 i0 <<<"$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)"
                sleep 5
                read -r b1 i1 <<<"$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)"
                tw=$(awk '$1=="tw_sock_TCP"{print $2}' /proc/slabinfo)
                (((b1 - b0) * 100 < QUIET * (b1 - b0 + i1 - i0) && tw < 2000)) && break
            done
        fi
        echo "== $size TCP + $UNIX UNIX sockets: $phase (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
        unshare -n "$SELF" --inner "$phase" "$size" "$UNIX" "$REPS" "$CPU_SECONDS" "$RAW" "$BIN" "$WALK" "$WALK_ARGS" ||
            echo "the $phase phase of $size sockets failed; its figures stay empty" >&2
        sleep 1 # the namespace's TIME_WAIT sockets are purged as it goes away
    done
done

python3 "$ROOT/bench/poll_report.py" "$RAW" $SIZES | tee "$OUTFILE"
{
    echo
    echo '<details><summary>Raw figures</summary>'
    echo
    echo '```'
    for f in "$RAW"/machine "$RAW"/*.peers "$RAW"/*.agent "$RAW"/*.agentevery; do
        echo "# $(basename "$f")"
        cat "$f"
    done
    echo '```'
    echo '</details>'
} >>"$OUTFILE"
echo "written to $OUTFILE" >&2
rm -rf "$RAW"
