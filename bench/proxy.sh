#!/bin/bash
# Benchmarks `sockscope proxy` against nginx (Debian nginx-light) as an
# HTTP/1.1 reverse proxy toward the same upstream (`sockscope upstream
# --behavior keepalive`), with `wrk -t2 -c100 -d10s --latency`, each run in a
# fresh network namespace. See BENCHMARKS.md, "Reference proxy vs nginx".
#
#   cargo build --release && sudo bench/proxy.sh
#
# Configurations (MODES): tcp (TCP upstream, a new upstream connection per
# request), tcp-ka (keepalive 16), unix, unix-ka; each with 1 and 2 workers
# (WORKERS: nginx worker_processes, proxy --workers). nginx and the proxy
# alternate (ABBA over repetitions). References: nginx `return 200` and
# wrk straight at the upstream.
#
# Env: SOCKSCOPE (default target/release/sockscope), UPSTREAM_BIN (the
# upstream's binary, default SOCKSCOPE), REPEATS (3), WORKERS
# ("1 2"), MODES ("tcp tcp-ka unix unix-ka"), SERVERS ("nginx proxy"),
# REFS (1: also the references), H11 (1: also nginx with HTTP/1.1 and no
# keepalive in the tcp and unix modes, closing first like the proxy),
# DURATION (10s), CONNS (100), THREADS (2),
# PIN (auto: with 1 worker wrk on CPU 0, servers on CPU 1; none), OUT
# (results directory, default a new /tmp/proxy-bench.*).
# Prints the median of each (server, configuration) as a Markdown table.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
export SOCKSCOPE=${SOCKSCOPE:-$repo/target/release/sockscope}
export DURATION=${DURATION:-10s} CONNS=${CONNS:-100} THREADS=${THREADS:-2} PIN=${PIN:-auto}
REPEATS=${REPEATS:-3}
WORKERS=${WORKERS:-1 2}
MODES=${MODES:-tcp tcp-ka unix unix-ka}
SERVERS=${SERVERS:-nginx proxy}
REFS=${REFS:-1}
H11=${H11:-1}
OUT=${OUT:-$(mktemp -d /tmp/proxy-bench.XXXXXX)}

die() { echo "proxy.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (unshare -n, nginx user root)"
[ -x "$SOCKSCOPE" ] || die "$SOCKSCOPE missing: cargo build --release"
for t in wrk nginx unshare taskset ss ip; do
	command -v $t >/dev/null || die "$t not found (apt-get install wrk nginx-light iproute2 util-linux)"
done
mkdir -p "$OUT/logs"
results=$OUT/results.txt

{
	echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) CPUs"
	echo "# $(nginx -v 2>&1) | $(wrk -v 2>&1 | head -1) | $("$SOCKSCOPE" --version) ($SOCKSCOPE, upstream ${UPSTREAM_BIN:-same})"
	echo "# netns defaults: ip_local_port_range $(unshare -n cat /proc/sys/net/ipv4/ip_local_port_range | tr '\t' '-')" \
		"tcp_tw_reuse $(unshare -n cat /proc/sys/net/ipv4/tcp_tw_reuse)" \
		"somaxconn $(unshare -n cat /proc/sys/net/core/somaxconn)"
	echo "# wrk -t$THREADS -c$CONNS -d$DURATION --latency; PIN=$PIN"
} | tee "$results"

run() { # rep server mode workers
	local load line
	load=$(cut -d' ' -f1 /proc/loadavg)
	if ! line=$(unshare -n "$here/proxy/run-one.sh" "$2" "$3" "$4" "$OUT/logs"); then
		echo "proxy.sh: run $* failed (logs in $OUT/logs)" >&2
		line="RESULT failed=1"
	fi
	line="rep=$1 server=$2 mode=$3 workers=$4 load1=$load ${line#RESULT }"
	echo "$line" | tee -a "$results"
	# Let the previous run's sockets and processes go.
	sleep 1
}

for rep in $(seq "$REPEATS"); do
	for w in $WORKERS; do
		if [ "$REFS" = 1 ]; then
			run "$rep" nginx-return tcp "$w"
			run "$rep" upstream tcp "$w"
		fi
		for m in $MODES; do
			order=$SERVERS
			# ABBA: odd repetitions in SERVERS order, even ones reversed.
			[ $((rep % 2)) = 0 ] && order=$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')
			for s in $order; do
				run "$rep" "$s" "$m" "$w"
			done
			case $m in *-ka) ;; *) [ "$H11" = 1 ] && run "$rep" nginx-h11 "$m" "$w" ;; esac
		done
	done
done

echo
"$here/proxy/summary.sh" "$results" | tee "$OUT/summary.md"
echo
echo "raw results: $results; wrk outputs and server logs: $OUT/logs"
