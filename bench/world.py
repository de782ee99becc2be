#!/usr/bin/env python3
"""Builds a socket world in the current network namespace and holds it.

Run by bench/poll.sh inside a private network namespace (`unshare -n`),
after `ip link set lo up` and the sysctls (port range 1024-65535,
tcp_max_tw_buckets high). It creates:

* TCP listeners on 0.0.0.0:7100..7100+PORTS-1 (backlog 4096), an IPv6
  listener on [::1]:7200, a listener bound to 127.0.0.2:7300, and one on
  127.0.0.3:7400 (backlog 16) whose 10 connections are never accepted;
* TIME_WAIT sockets: client connects, server accepts, the client closes
  first, then the server: TIME_WAIT lands on the client side. Connections
  are spread over IPS loopback destinations (127.0.0.1..IPS) x PORTS
  listener ports, so every (source, destination) pool holds a few
  thousand 4-tuples and connect() never recycles a TIME_WAIT socket;
* ESTABLISHED connections held open (both ends are sockets of the
  namespace: 2 sockets per connection), 1% of them over IPv6;
* UNIX sockets: a listener on a path with accepted connections (client
  and server ends), an abstract listener, and socketpairs for the rest.

When the world is built it writes one line of counts to --ready FILE
(key=value, from /proc/net/sockstat) and waits for SIGTERM/SIGINT.
TIME_WAIT lasts 60 s (TCP_TIMEWAIT_LEN): measure within that window.
"""

import argparse
import ctypes
import os
import resource
import signal
import socket
import sys
import tempfile
import time


def sockstat():
    out = {}
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()[1:]
                out.update(zip(parts[0::2], (int(v) for v in parts[1::2])))
    return out


FDS_PER_HOLDER = 15000  # below the usual RLIMIT_NOFILE hard limit (20000 here)


def hold(children, build):
    """Runs build() in a forked child that keeps the sockets it returns
    open until it is killed (or its parent dies): RLIMIT_NOFILE may not be
    raisable (no CAP_SYS_RESOURCE), so open sockets are spread over
    processes."""
    pid = os.fork()
    if pid:
        children.append(pid)
        return
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        kept = build()  # noqa: F841 (held open)
        while True:
            signal.pause()
    finally:
        os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tcp", type=int, required=True, help="TCP sockets in total")
    ap.add_argument(
        "--established-share",
        type=float,
        default=1 / 7,
        help="share of the TCP sockets that are ESTABLISHED (default 1/7: 30k TIME_WAIT + 5k ESTABLISHED at 35k)",
    )
    ap.add_argument("--unix", type=int, default=10000, help="UNIX sockets in total")
    ap.add_argument("--ports", type=int, default=8, help="listener ports")
    ap.add_argument("--ips", type=int, default=4, help="loopback destination IPs")
    ap.add_argument("--ready", required=True, help="file to write the counts to")
    args = ap.parse_args()

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    keep = []  # sockets this process holds open
    children = []  # processes holding the rest

    # Listeners.
    listeners = {}
    for i in range(args.ports):
        port = 7100 + i
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(4096)
        listeners[port] = s
    l6 = socket.socket(socket.AF_INET6)
    l6.bind(("::1", 7200))
    l6.listen(4096)
    l2 = socket.socket()
    l2.bind(("127.0.0.2", 7300))
    l2.listen(128)
    lq = socket.socket()
    lq.bind(("127.0.0.3", 7400))
    lq.listen(16)
    keep += [l6, l2, lq]
    queued = 10
    for _ in range(queued):
        c = socket.socket()
        c.connect(("127.0.0.3", 7400))
        keep.append(c)  # never accepted: 10 children wait in the queue

    n_listeners = args.ports + 3
    est_conns = round(args.tcp * args.established_share / 2)
    n_tw = args.tcp - n_listeners - 2 * queued - 2 * est_conns
    if n_tw < 0:
        sys.exit("--tcp too small for the fixed listeners")
    dests = [
        (f"127.0.0.{ip}", 7100 + p) for p in range(args.ports) for ip in range(1, args.ips + 1)
    ]

    # TIME_WAIT: the client closes first.
    for i in range(n_tw):
        host, port = dests[i % len(dests)]
        c = socket.socket()
        c.connect((host, port))
        s, _ = listeners[port].accept()
        c.close()
        s.close()

    # ESTABLISHED, held open by child processes; 1% over IPv6.
    n_v6 = est_conns // 100
    plan = [dests[i % len(dests)] for i in range(est_conns - n_v6)] + [("::1", 7200)] * n_v6
    per = FDS_PER_HOLDER // 2

    def connect_chunk(chunk):
        def build():
            held = []
            for host, port in chunk:
                v6 = ":" in host
                c = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
                c.connect((host, port))
                s, _ = (l6 if v6 else listeners[port]).accept()
                held += [c, s]
            return held

        return build

    for k in range(0, len(plan), per):
        ready_r, ready_w = os.pipe()
        chunk = plan[k : k + per]
        build = connect_chunk(chunk)

        def build_and_signal(build=build, w=ready_w):
            held = build()
            os.write(w, b"x")
            return held

        hold(children, build_and_signal)
        os.read(ready_r, 1)  # wait: accept() order must not interleave
        os.close(ready_r)
        os.close(ready_w)
    keep += listeners.values()

    # UNIX: a path listener with accepted connections, an abstract
    # listener, socketpairs for the rest.
    tmp = tempfile.mkdtemp(prefix="sockscope-bench-")
    os.chmod(tmp, 0o755)
    path = os.path.join(tmp, "app.sock")
    ul = socket.socket(socket.AF_UNIX)
    ul.bind(path)
    ul.listen(4096)
    ua = socket.socket(socket.AF_UNIX)
    ua.bind("\0sockscope-bench")
    ua.listen(128)
    keep += [ul, ua]
    unix_left = args.unix - 2
    accepted = min(1000, unix_left // 4)
    pairs = (unix_left - 2 * accepted) // 2

    def unix_world():
        held = []
        for _ in range(accepted):
            c = socket.socket(socket.AF_UNIX)
            c.connect(path)
            s, _ = ul.accept()
            held += [c, s]
        for _ in range(pairs):
            held += socket.socketpair()
        return held

    ready_r, ready_w = os.pipe()

    def unix_and_signal():
        held = unix_world()
        os.write(ready_w, b"x")
        return held

    hold(children, unix_and_signal)
    os.read(ready_r, 1)

    built = time.monotonic() - started
    st = sockstat()
    with open(args.ready + ".tmp", "w") as f:
        f.write(
            f"tw={st.get('tw', 0)} inuse={st.get('inuse', 0)} "
            f"planned_tw={n_tw} planned_established={2 * est_conns + 2 * queued} "
            f"listeners={n_listeners} unix={args.unix} build_seconds={built:.1f}\n"
        )
    os.rename(args.ready + ".tmp", args.ready)

    def stop(*_):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            os.waitpid(pid, 0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while True:
            signal.pause()
    finally:
        os.unlink(path)
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
