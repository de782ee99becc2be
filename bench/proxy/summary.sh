#!/bin/bash
# Markdown tables from bench/proxy.sh's results.txt (or several
# concatenated): per configuration and worker count, the median over runs
# of rps, p50, p99, TIME_WAIT and CPU time per request, the largest error
# counts of any run, and the proxy/nginx ratios.
set -eu
awk '
function med(key,   n, i, j, t, a) {
	n = cnt[key]
	if (n == 0) return ""
	for (i = 1; i <= n; i++) a[i] = val[key, i]
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function add(g, k, v) { cnt[g, k]++; val[g, k, cnt[g, k]] = v }
/^#/ { next }
{
	delete f
	for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
	if (f["failed"] == 1) { failed[f["server"], f["mode"], f["workers"]]++; next }
	g = f["server"] SUBSEP f["mode"] SUBSEP f["workers"]
	runs[g]++
	add(g, "rps", f["rps"]); add(g, "p50", f["p50_us"]); add(g, "p99", f["p99_us"])
	add(g, "tw", f["tw"]); add(g, "load", f["load1"])
	add(g, "scpu", f["server_cpu_us"]); add(g, "ucpu", f["upstream_cpu_us"])
	sock = f["connect_err"] + f["read_err"] + f["write_err"] + f["timeout_err"]
	if (f["status_err"] > st[g]) st[g] = f["status_err"]
	if (sock > se[g]) se[g] = sock
	if (!(f["workers"] in seenw)) { seenw[f["workers"]] = 1; ws[++nw] = f["workers"] }
}
function row(s, m, w, label,   g, r, n9, line) {
	g = s SUBSEP m SUBSEP w
	if (!(g in runs)) return
	line = sprintf("| %s | %s | %.0f | %.2f | %.2f | %d | %d | %.0f |", w, label, med(g SUBSEP "rps"), \
		med(g SUBSEP "p50") / 1000, med(g SUBSEP "p99") / 1000, st[g], se[g], med(g SUBSEP "tw"))
	p = "proxy" SUBSEP m SUBSEP w
	if (s == "proxy" && (("nginx" SUBSEP m SUBSEP w) in runs)) {
		n = "nginx" SUBSEP m SUBSEP w
		line = line sprintf(" %.2f× | %.2f× |", med(g SUBSEP "rps") / med(n SUBSEP "rps"), \
			med(g SUBSEP "p99") / med(n SUBSEP "p99"))
	} else if (s == "nginx-h11" && (p in runs)) {
		# In this row: the proxy figures divided by this row.
		line = line sprintf(" (proxy ÷ this: %.2f×) | (%.2f×) |", med(p SUBSEP "rps") / med(g SUBSEP "rps"), \
			med(p SUBSEP "p99") / med(g SUBSEP "p99"))
	} else line = line " | |"
	if (s == "nginx-return" || s == "upstream") cpu = sprintf("%.1f", med(g SUBSEP "scpu"))
	else cpu = sprintf("%.1f / %.1f", med(g SUBSEP "scpu"), med(g SUBSEP "ucpu"))
	print line sprintf(" %s | %d (load %.1f) |", cpu, runs[g], med(g SUBSEP "load"))
	if ((s SUBSEP m SUBSEP w) in failed) print "| " w " | " label " failed " failed[s, m, w] " run(s) | | | | | | | | | | |"
}
END {
	title["tcp"] = "TCP upstream, no keepalive"
	title["tcp-ka"] = "TCP upstream, keepalive 16"
	title["unix"] = "UNIX-socket upstream, no keepalive"
	title["unix-ka"] = "UNIX-socket upstream, keepalive 16"
	hdr = "| workers | server | rps | p50 ms | p99 ms | non-2xx | socket errors | TIME_WAIT | rps vs nginx | p99 vs nginx | CPU µs/request (server / upstream) | runs (median load1) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
	split("tcp tcp-ka unix unix-ka", modes, " ")
	for (k = 1; k <= 4; k++) {
		m = modes[k]; any = 0
		for (i = 1; i <= nw; i++) if ((("nginx" SUBSEP m SUBSEP ws[i]) in runs) || (("proxy" SUBSEP m SUBSEP ws[i]) in runs)) any = 1
		if (!any) continue
		print "#### " title[m] "\n\n" hdr
		for (i = 1; i <= nw; i++) {
			row("nginx", m, ws[i], "nginx")
			row("proxy", m, ws[i], "sockscope proxy")
			row("nginx-h11", m, ws[i], "nginx, HTTP/1.1, closes first")
		}
		print ""
	}
	any = 0
	for (i = 1; i <= nw; i++) if ((("nginx-return" SUBSEP "tcp" SUBSEP ws[i]) in runs) || (("upstream" SUBSEP "tcp" SUBSEP ws[i]) in runs)) any = 1
	if (any) {
		print "#### References (no proxying)\n\n" hdr
		for (i = 1; i <= nw; i++) {
			row("nginx-return", "tcp", ws[i], "nginx `return 200`")
			row("upstream", "tcp", ws[i], "`sockscope upstream` direct")
		}
	}
}' "$1"
