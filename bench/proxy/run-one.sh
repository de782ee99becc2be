#!/bin/bash
# One benchmark run, inside a fresh network namespace (bench/proxy.sh calls
# it as `unshare -n bench/proxy/run-one.sh ...`):
#   run-one.sh SERVER MODE WORKERS LOGDIR
#   SERVER: nginx | proxy    (reverse proxy toward `sockscope upstream`)
#           nginx-h11        (nginx with HTTP/1.1 to the upstream and, in the
#                             tcp/unix modes, no keepalive: it closes first)
#           nginx-return     (nginx `return 200`, no upstream; MODE ignored)
#           upstream         (wrk straight at the upstream; MODE tcp|unix ignored)
#   MODE:   tcp | tcp-ka | unix | unix-ka
# Prints one line: RESULT key=value ... (wrk figures, TIME_WAIT counts).
# Env: SOCKSCOPE (binary), UPSTREAM_BIN (the upstream's binary, default
# SOCKSCOPE), DURATION, CONNS, THREADS, PIN (auto|none).
set -eu
server=$1 mode=$2 workers=$3 logdir=$4
here=$(cd "$(dirname "$0")" && pwd)
: "${SOCKSCOPE:?}" "${UPSTREAM_BIN:=$SOCKSCOPE}" "${DURATION:=10s}" "${CONNS:=100}" "${THREADS:=2}" "${PIN:=auto}"

ip link set lo up
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# The namespace's defaults (ip_local_port_range 32768-60999, tcp_tw_reuse 2,
# somaxconn 4096) are kept; bench/proxy.sh records them.

# CPU placement: with one worker, wrk gets CPU 0 and the server under test
# (and the upstream) CPU 1; with two, nothing is pinned.
if [ "$PIN" = auto ] && [ "$workers" = 1 ] && [ "$(nproc --all)" -ge 2 ]; then
	pin_client="taskset -c 0" pin_server="taskset -c 1"
else
	pin_client="" pin_server=""
fi

dir=$(mktemp -d /tmp/proxybench.XXXXXX)
chmod 755 "$dir"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

wait_until() { # what, command...
	local what=$1
	shift
	for _ in $(seq 200); do
		"$@" && return 0
		sleep 0.05
	done
	echo "run-one: timed out waiting for $what" >&2
	exit 1
}
tcp_listening() { [ -n "$(ss -Hltn "sport = :$1")" ]; }

case $mode in
tcp | tcp-ka) up_addr=127.0.0.1:8081 up_url=http://127.0.0.1:8081 ;;
unix | unix-ka) up_addr=unix:$dir/up.sock up_url=unix:$dir/up.sock ;;
*) echo "run-one: bad mode $mode" >&2; exit 2 ;;
esac
case $mode in *-ka) ka=16 ;; *) ka=0 ;; esac
tag=$server-$mode-w$workers

if [ "$server" != nginx-return ]; then
	# The upstream gets as many threads as the server under test.
	$pin_server "$UPSTREAM_BIN" --log.level warn upstream --listen "$up_addr" \
		--behavior keepalive --workers "$workers" 2>"$logdir/$tag.upstream.log" &
	pids+=($!)
	case $mode in
	tcp*) wait_until upstream tcp_listening 8081 ;;
	unix*) wait_until upstream test -S "$dir/up.sock" ;;
	esac
fi

target=http://127.0.0.1:8080/
case $server in
nginx | nginx-return | nginx-h11)
	case $server in
	nginx-return) nmode=return ;;
	nginx-h11) nmode=${mode%-ka}-h11 ;;
	*) nmode=$mode ;;
	esac
	mkdir -p "$dir"/{body,proxy,fastcgi,uwsgi,scgi}
	"$here/nginx.conf.sh" "$dir" "$workers" "$nmode" >"$dir/nginx.conf"
	$pin_server nginx -c "$dir/nginx.conf" -p "$dir" 2>"$logdir/$tag.server.log" &
	pids+=($!)
	wait_until nginx tcp_listening 8080
	;;
proxy)
	# --log.level warn: the per-request access log is at info.
	$pin_server "$SOCKSCOPE" --log.level warn proxy --listen 127.0.0.1:8080 \
		--upstream "$up_url" --keepalive "$ka" --workers "$workers" \
		2>"$logdir/$tag.server.log" &
	pids+=($!)
	wait_until proxy tcp_listening 8080
	;;
upstream)
	# wrk straight at the upstream (TCP only): its ceiling.
	target=http://127.0.0.1:8081/
	;;
*) echo "run-one: bad server $server" >&2; exit 2 ;;
esac

# CPU time (user + system, clock ticks) of a process and its children
# processes (nginx's workers), all threads.
cpu_ticks() {
	local t=0 p
	for p in "$@" $(pgrep -P "$1" 2>/dev/null); do
		[ -r "/proc/$p/stat" ] || continue
		# Fields 14 and 15 after the ")" that ends the command name.
		t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
	done
	echo "$t"
}
server_pid=${pids[${#pids[@]}-1]:-}
up_pid=${pids[0]:-}
[ "$server" = upstream ] && server_pid=$up_pid
[ "$server" = nginx-return ] && up_pid=""
s0=$(cpu_ticks $server_pid) u0=$( [ -n "$up_pid" ] && cpu_ticks "$up_pid" || echo 0)
out=$($pin_client wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency \
	-s "$here/report.lua" "$target")
printf '%s\n' "$out" >"$logdir/$tag.wrk.txt"
# TIME_WAIT right after wrk exits, servers still up: all of them, those whose
# local port is the upstream's (the upstream closed first) and those toward
# it (the proxy closed first). wrk's own ~CONNS closes are in the total.
s1=$(cpu_ticks $server_pid) u1=$( [ -n "$up_pid" ] && cpu_ticks "$up_pid" || echo 0)
tw=$(ss -Htan state time-wait | wc -l)
tw_up=$(ss -Htan state time-wait "sport = :8081" | wc -l)
tw_px=$(ss -Htan state time-wait "dport = :8081" | wc -l)
for p in "${pids[@]}"; do
	kill -0 "$p" 2>/dev/null || { echo "run-one: $tag: a server died" >&2; exit 1; }
done
line=$(printf '%s\n' "$out" | grep '^RESULT ')
# CPU per request (µs): the server under test and the upstream, over the
# run; less sensitive than rps to other load on the machine.
hz=$(getconf CLK_TCK)
reqs=$(printf '%s\n' "$line" | sed 's/.*requests=\([0-9]*\).*/\1/')
cpu() { awk -v t="$1" -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }'; }
echo "$line tw=$tw tw_upstream=$tw_up tw_proxy=$tw_px" \
	"server_cpu_us=$(cpu $((s1 - s0))) upstream_cpu_us=$(cpu $((u1 - u0)))"
