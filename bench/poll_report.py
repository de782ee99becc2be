#!/usr/bin/env python3
"""Turns the raw figures of bench/poll.sh into a Markdown table.

usage: poll_report.py RAW_DIR SIZE...
       poll_report.py --merge RESULT.md RESULT.md...

RAW_DIR holds `machine` and, per size, `SIZE.peers` and `SIZE.agent`
(key=value lines written by poll.sh's phases). With --merge, the raw
figures at the end of several poll.sh results (one binary, several runs)
are combined: every number is the median of its values over the runs.
"""

import os
import statistics
import sys
import tempfile


def load(path):
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                out[k] = v
    return out


def num(d, k):
    try:
        return float(d[k])
    except (KeyError, ValueError):
        return None


def fmt(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def merge(files):
    """Writes the per-key medians of several results' raw figures into a
    temporary RAW_DIR; returns it and the sizes."""
    runs = []  # {section: {key: value}}
    for path in files:
        sections, cur = {}, None
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if line.startswith("# ") and cur is not None or line == "```" and cur is None:
                    cur = line[2:] if line.startswith("# ") else ""
                    sections.setdefault(cur, {})
                elif line == "```":
                    cur = None
                elif cur is not None and "=" in line:
                    k, _, v = line.partition("=")
                    sections[cur][k] = v
        runs.append(sections)
    out = tempfile.mkdtemp(prefix="poll-merge-")
    names = sorted({n for r in runs for n in r if n})
    for name in names:
        keys = {k for r in runs for k in r.get(name, {})}
        merged = {}
        for k in sorted(keys):
            vals = [r[name][k] for r in runs if k in r.get(name, {})]
            try:
                nums = [float(v) for v in vals if v != ""]
                merged[k] = f"{statistics.median(nums):g}" if nums else ""
            except ValueError:
                merged[k] = vals[-1] if name != "machine" or k != "date" else " / ".join(vals)
        if name == "machine":
            merged["date"] = " / ".join(r.get("machine", {}).get("date", "?") for r in runs)
            merged["runs"] = str(len(runs))
        with open(os.path.join(out, name), "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in merged.items())
    sizes = sorted({n.split(".")[0] for n in names if "." in n}, key=int)
    return out, sizes


def main():
    if sys.argv[1] == "--merge":
        raw, sizes = merge(sys.argv[2:])
    else:
        raw, sizes = sys.argv[1], sys.argv[2:]
    m = load(os.path.join(raw, "machine"))
    peers = {s: load(os.path.join(raw, f"{s}.peers")) for s in sizes}
    agent = {s: load(os.path.join(raw, f"{s}.agent")) for s in sizes}
    every = {s: load(os.path.join(raw, f"{s}.agentevery")) for s in sizes}

    def k(n):
        n = int(n)
        return f"{n // 1000}k" if n % 1000 == 0 else str(n)

    cols = [k(s) for s in sizes]
    scale = len(sizes) > 1
    head = "| | " + " | ".join(cols) + (f" | {cols[-1]} / {cols[0]} |" if scale else " |")
    sep = "|---" * (len(cols) + 1 + scale) + "|"
    lines = [
        f"# bench/poll.sh, {m.get('date', '?')}",
        "",
        f"- machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} vCPUs, kernel {m.get('kernel', '?')}",
        f"- sockscope {m.get('sockscope', '?')} (release: `{m.get('bin', '?')}`), rustc {m.get('rustc', '?')}, "
        f"ss {m.get('ss', '?')}, node_exporter "
        f"{next((p.get('node_exporter_version') for p in peers.values() if p.get('node_exporter_version')), 'absent')}, "
        f"hyperfine {m.get('hyperfine') or 'absent'}",
        (f"- medians over {m['runs']} runs of bench/poll.sh (each figure: the median of the runs' medians)\n" if "runs" in m else "")
        + f"- medians of {m.get('reps', '?')} repetitions; agent CPU over "
        f"{m.get('cpu_seconds', '?')} s at the default 1 s poll interval, with the default census "
        "schedule (`--census.cpu-budget-ratio 0.01`) and with a census on every poll (`1`)",
        "",
        head,
        sep,
    ]

    def row(label, get, digits=1):
        vals = [get(s) for s in sizes]
        cells = [fmt(v, digits) for v in vals]
        tail = ""
        if scale:
            r = ratio(vals[-1], vals[0])
            tail = f" | {fmt(r, 1)}×" if r is not None else " | "
        lines.append(f"| {label} | " + " | ".join(cells) + tail + " |")

    def counts(s, phase):
        d = (peers if phase == "peers" else agent)[s]
        c = dict(kv.split("=") for kv in d.get("counts_start", "").split(",") if "=" in kv)
        return c

    lines.append(
        "| world (ss, at the start of the peers phase): TCP total / TIME_WAIT / ESTAB / LISTEN, UNIX | "
        + " | ".join(
            "{total} / {tw} / {est} / {listen}, {unix}".format(**counts(s, "peers"))
            if counts(s, "peers")
            else "–"
            for s in sizes
        )
        + (" | |" if scale else " |")
    )
    P = lambda key: lambda s: num(peers[s], key)  # noqa: E731
    A = lambda key: lambda s: num(agent[s], key)  # noqa: E731
    E = lambda key: lambda s: num(every[s], key)  # noqa: E731
    row("**agent census** (full poll), ms (its sources' `sockscope_source_duration_seconds`)", A("agent_poll_ms"))
    row("— of which inet_diag (one dump for both families), ms", A("agent_poll_tcp_ms"))
    row("— of which unix_diag, ms", A("agent_poll_unix_ms"))
    row("agent census when it runs every poll (`--census.cpu-budget-ratio 1`), ms", E("agent_poll_ms"))
    row("agent census interval (`sockscope_census_interval_seconds`), s", A("agent_census_interval_s"), digits=2)
    row("agent poll between censuses (listener-only dumps), ms", A("agent_listen_tick_ms"), digits=2)
    row("`snapshot --timing` total (one-shot), ms", P("snapshot_total_ms"))
    row("`snapshot` wall (process start to exit), ms", P("snapshot_wall_ms"))
    row("raw netlink walk (the census's dumps, headers only), ms", P("walk_median_ms"))
    lines.append(
        "| — TCP part / UNIX part, ms | "
        + " | ".join(
            f"{fmt(num(peers[s], 'walk_tcp_ms'))} / {fmt(num(peers[s], 'walk_unix_ms'))}"
            for s in sizes
        )
        + (" | |" if scale else " |")
    )
    row("raw walk 1 s apart, as the agent polls (`--interval-ms 1000`), ms", P("walkcold_median_ms"))
    row("raw walk, one inet_diag dump per family (`--per-family`, the fallback), ms", P("walkpf_median_ms"))
    row("raw walk with bound-only sockets (`--bound-inactive`), ms", P("walkbound_median_ms"))
    row("raw walk, listeners only (`--listeners-only`), ms", P("walklisten_median_ms"), digits=2)
    row("`ss -tan` wall, ms", P("ss_tan_ms"))
    row("`ss -xa` wall, ms", P("ss_xa_ms"))
    row("`cat /proc/net/tcp /proc/net/tcp6` wall, ms", P("cat_proc_tcp_ms"))
    row("node_exporter tcpstat (`node_scrape_collector_duration_seconds`), ms", P("node_tcpstat_ms"))
    row("`snapshot --source procfs` total, ms", P("procfs_total_ms"))
    row("agent peak RSS (VmHWM), MB", lambda s: (num(agent[s], "agent_vmhwm_kb") or 0) / 1024 or None)
    row("node_exporter peak RSS (VmHWM), MB", lambda s: (num(peers[s], "node_exporter_vmhwm_kb") or 0) / 1024 or None)
    row("**agent CPU, % of one core** (default settings)", A("agent_cpu_pct"), digits=2)
    row("agent CPU, % of one core, census every poll", E("agent_cpu_pct"), digits=2)
    row("agent peak RSS, census every poll, MB", lambda s: (num(every[s], "agent_vmhwm_kb") or 0) / 1024 or None)

    lines += [
        "",
        "CPU time (user + system) per run: unlike wall time, not inflated by other work on the machine.",
        "",
        head,
        sep,
    ]
    row("agent, per second (threads' schedstat over the window), default settings, ms", A("agent_cpu_ms_per_s"))
    row("agent, per poll with a census every poll, ms", E("agent_cpu_ms_per_s"))
    row("`snapshot` process (startup included), ms", P("snapshot_wall_cpu_ms"))
    row("raw netlink walk, per iteration, ms", P("walk_cpu_ms"))
    row("raw netlink walk 1 s apart, per iteration, ms", P("walkcold_cpu_ms"))
    row("`ss -tan` process, ms", P("ss_tan_cpu_ms"))
    row("`ss -xa` process, ms", P("ss_xa_cpu_ms"))
    row("`cat /proc/net/tcp /proc/net/tcp6`, ms", P("cat_proc_tcp_cpu_ms"))
    row("node_exporter, per scrape (whole process), ms", P("node_scrape_cpu_ms"))

    lines += ["", "| ratio (target) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]

    def rrow(label, a, b, target):
        vals = [ratio(a(s), b(s)) for s in sizes]
        cells = [
            "–" if v is None else f"{v:.2f} {'✓' if v <= target else '✗'}" for v in vals
        ]
        lines.append(f"| {label} (≤ {target}) | " + " | ".join(cells) + " |")

    poll = A("agent_poll_ms")
    rrow("agent poll / node_exporter tcpstat", poll, P("node_tcpstat_ms"), 0.5)
    rrow("agent poll / `ss -tan`", poll, P("ss_tan_ms"), 0.3)
    rrow("agent poll / raw walk", poll, P("walk_median_ms"), 1.3)
    rrow("agent poll / raw walk 1 s apart", poll, P("walkcold_median_ms"), 1.3)
    rrow("agent poll / raw walk with `--bound-inactive`", poll, P("walkbound_median_ms"), 1.3)
    rrow("snapshot total / raw walk (same phase)", P("snapshot_total_ms"), P("walk_median_ms"), 1.3)
    # like for like with the peers, which run back to back: one-shot
    # censuses, back to back (`snapshot --timing`)
    rrow("snapshot total / node_exporter tcpstat", P("snapshot_total_ms"), P("node_tcpstat_ms"), 0.5)
    rrow("snapshot total / `ss -tan`", P("snapshot_total_ms"), P("ss_tan_ms"), 0.3)
    rrow("snapshot TCP part / node_exporter tcpstat", P("snapshot_tcp_ms"), P("node_tcpstat_ms"), 0.5)
    rrow("snapshot TCP part / `ss -tan`", P("snapshot_tcp_ms"), P("ss_tan_ms"), 0.3)
    rrow("raw walk, TCP part / node_exporter tcpstat", P("walk_tcp_ms"), P("node_tcpstat_ms"), 0.5)
    rrow("raw walk, TCP part / `ss -tan`", P("walk_tcp_ms"), P("ss_tan_ms"), 0.3)
    tcp = A("agent_poll_tcp_ms")
    rrow("agent poll, TCP part / node_exporter tcpstat", tcp, P("node_tcpstat_ms"), 0.5)
    rrow("agent poll, TCP part / `ss -tan`", tcp, P("ss_tan_ms"), 0.3)
    cpu = E("agent_cpu_ms_per_s")
    rrow("CPU: agent census / node_exporter per scrape", cpu, P("node_scrape_cpu_ms"), 0.5)
    rrow("CPU: agent census / `ss -tan`", cpu, P("ss_tan_cpu_ms"), 0.3)
    rrow("CPU: agent census / raw walk", cpu, P("walk_cpu_ms"), 1.3)
    rrow("CPU: agent census / raw walk 1 s apart", cpu, P("walkcold_cpu_ms"), 1.3)
    rrow("agent CPU, % of one core, default settings", A("agent_cpu_pct"), lambda s: 1, 2)
    rrow("agent peak RSS, MB", lambda s: (num(agent[s], "agent_vmhwm_kb") or 0) / 1024 or None, lambda s: 1, 8)
    if scale:
        r = ratio(poll(sizes[-1]), poll(sizes[0]))
        n = int(sizes[-1]) / int(sizes[0])
        lines.append(
            f"| agent poll {cols[-1]} / {cols[0]} (≤ {n * 1.1:.0f}) | "
            + (f"{r:.1f} {'✓' if r <= n * 1.1 else '✗'}" if r else "–")
            + " |" * len(cols)
        )
    lines += [
        "",
        "| conditions | " + " | ".join(f"{c} peers | {c} agent | {c} every" for c in cols) + " |",
        "|---" * (3 * len(cols) + 1) + "|",
        "| load average (1 min) at start → end | "
        + " | ".join(
            f"{d.get('load_start', '?')} → {d.get('load_end', '?')}"
            for s in sizes
            for d in (peers[s], agent[s], every[s])
        )
        + " |",
        "| machine busy during the phase (both CPUs, the benchmark included) | "
        + " | ".join(f"{d.get('machine_busy_pct', '?')} %" for s in sizes for d in (peers[s], agent[s], every[s]))
        + " |",
        "| TIME_WAIT of other namespaces in the shared hash (tw_sock_TCP slab) | "
        + " | ".join(
            f"{d.get('slab_tw_before', '?')}" for s in sizes for d in (peers[s], agent[s], every[s])
        )
        + " |",
        "| world TCP sockets at start → end of phase; phase length | "
        + " | ".join(
            "{} → {}; {} s".format(
                dict(kv.split("=") for kv in d.get("counts_start", "x=?").split(",")).get("total", "?"),
                dict(kv.split("=") for kv in d.get("counts_end", "x=?").split(",")).get("total", "?"),
                d.get("world_age_s", "?"),
            )
            for s in sizes
            for d in (peers[s], agent[s], every[s])
        )
        + " |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
