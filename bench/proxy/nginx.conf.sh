#!/bin/bash
# Prints an nginx config: nginx.conf.sh DIR WORKERS MODE
#   MODE: tcp | tcp-ka | unix | unix-ka  (proxy_pass to the upstream)
#         tcp-h11 | unix-h11              (HTTP/1.1 to the upstream, no
#                                          keepalive: nginx closes first,
#                                          as `sockscope proxy --keepalive 0`)
#         return                          (return 200 "ok\n", no upstream)
# Same shape as `sockscope proxy`: listen 127.0.0.1:8080 backlog 511,
# no access log, keepalive 16 (per worker, like the proxy's per-worker pool)
# with HTTP/1.1 and an empty Connection header in the -ka modes, nginx's
# default HTTP/1.0 + Connection: close otherwise.
set -eu
dir=$1 workers=$2 mode=$3
case $mode in
tcp | tcp-ka | tcp-h11) server="server 127.0.0.1:8081;" ;;
unix | unix-ka | unix-h11) server="server unix:$dir/up.sock;" ;;
return) server="" ;;
*) echo "nginx.conf.sh: bad mode $mode" >&2; exit 2 ;;
esac
case $mode in
*-ka)
	pool="keepalive 16;"
	hdrs='proxy_http_version 1.1; proxy_set_header Connection "";'
	;;
*-h11)
	pool=""
	hdrs='proxy_http_version 1.1; proxy_set_header Connection "";'
	;;
*) pool="" hdrs="" ;;
esac
if [ "$mode" = return ]; then
	location='return 200 "ok\n";'
	upstream=""
else
	location="proxy_pass http://u; $hdrs"
	upstream="upstream u { $server $pool }"
fi
cat <<CONF
daemon off;
user root;
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    default_type text/plain;
    $upstream
    server {
        listen 127.0.0.1:8080 backlog=511;
        location / { $location }
    }
}
CONF
