# Shell helpers shared by the benchmark scripts (sourced).

stop_pid() { # PID SIGNAL: signal, wait up to 15s, then SIGKILL
    local pid=$1 sig=$2 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# wait_http URL SECONDS PID: until URL answers 2xx; 1 if PID exits or time runs out
wait_http() {
    local url=$1 secs=$2 pid=$3 i
    for ((i = 0; i < secs * 10; i++)); do
        if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# nginx_start DIR HOST PORT BODY: the reference server. Serves the file BODY
# at /v1/me/loans (the path me_loans.lua asks for) from DIR, with
# worker_processes = nproc and access_log off; sets NGINX_PID and checks that
# it serves exactly BODY's size. Needs NGINX_BIN and the caller's die.
nginx_start() {
    local ng=$1 host=$2 port=$3 body=$4 bytes
    mkdir -p "$ng/conf" "$ng/logs" "$ng/tmp" "$ng/html/v1/me"
    cp "$body" "$ng/html/v1/me/loans"
    chmod -R a+rX "$ng/html"
    cat >"$ng/conf/nginx.conf" <<EOF
worker_processes $(nproc);
pid $ng/nginx.pid;
error_log $ng/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    default_type application/json;
    client_body_temp_path $ng/tmp/body;
    proxy_temp_path $ng/tmp/proxy;
    fastcgi_temp_path $ng/tmp/fastcgi;
    uwsgi_temp_path $ng/tmp/uwsgi;
    scgi_temp_path $ng/tmp/scgi;
    server {
        listen $host:$port;
        root $ng/html;
        location / { }
    }
}
EOF
    "$NGINX_BIN" -p "$ng/" -e "$ng/logs/error.log" -c "$ng/conf/nginx.conf" -g 'daemon off;' &
    NGINX_PID=$!
    if ! wait_http "http://$host:$port/v1/me/loans" 20 "$NGINX_PID"; then
        cat "$ng/logs/error.log" >&2 || true
        die "nginx did not start"
    fi
    bytes=$(curl -fsS -o /dev/null -w '%{size_download}' "http://$host:$port/v1/me/loans")
    [ "$bytes" = "$(stat -c %s "$body")" ] || die "nginx serves $bytes bytes, the body has $(stat -c %s "$body")"
}
