"""One network namespace's world for tests/netns_all.rs, run inside
`unshare -n -u python3 netns_child.py K READY_FILE`.

It sets its own hostname, port range, somaxconn and tcp_tw_reuse, then
builds: a TCP listener on 127.0.0.1:8080 with backlog 8 that never accepts
and K + 2 queued connections; 10 * (K + 1) client-side TIME_WAIT sockets
toward a local server on 127.0.0.1:9000 (the client closes first); the same
abstract UNIX listener name in every namespace, @sockscope-netns-test, with
K + 1 queued connections. Then it writes READY_FILE and holds everything
until its stdin is closed.
"""
import os
import socket
import subprocess
import sys

k = int(sys.argv[1])
ready = sys.argv[2]

socket.sethostname(f"sockscope-ns{k}")
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def sysctl(key, value):
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)


sysctl("net/ipv4/ip_local_port_range", f"{41000 + 1000 * k} {41999 + 1000 * k}")
sysctl("net/core/somaxconn", str(64 + k))
sysctl("net/ipv4/tcp_tw_reuse", "0")
# A stale ACK must not kill a TIME_WAIT socket (RFC 1337, see FIELD-NOTES).
sysctl("net/ipv4/tcp_rfc1337", "1")

never = socket.socket()
never.bind(("127.0.0.1", 8080))
never.listen(8)
queued = [socket.create_connection(("127.0.0.1", 8080)) for _ in range(k + 2)]

server = socket.socket()
server.bind(("127.0.0.1", 9000))
server.listen(64)
for _ in range(10 * (k + 1)):
    c = socket.create_connection(("127.0.0.1", 9000))
    s, _ = server.accept()
    c.close()
    assert s.recv(1) == b""
    s.close()

unix = socket.socket(socket.AF_UNIX)
unix.bind("\0sockscope-netns-test")
unix.listen(16)
unix_queued = []
for _ in range(k + 1):
    c = socket.socket(socket.AF_UNIX)
    c.connect("\0sockscope-netns-test")
    unix_queued.append(c)

with open(ready + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(ready + ".tmp", ready)
sys.stdin.read()
