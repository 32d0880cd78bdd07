#!/usr/bin/env bash
# Throwaway database servers for warmpool's integration tests: PostgreSQL, MariaDB and PgBouncer
# (transaction pooling, in front of that PostgreSQL), each in a temporary directory, listening on
# 127.0.0.1 on ports chosen at run time. Nothing else is touched: no system service, no other
# server's port, socket or data directory.
#
# Sourced (as scripts/test does):
#     source scripts/servers.sh && warmpool_servers_start    # then warmpool_servers_stop
# Standalone, for a developer's shell:
#     eval "$(bash scripts/servers.sh start)"
#     ctest --test-dir build -L integration --output-on-failure
#     bash scripts/servers.sh stop          # uses $WARMPOOL_TEST_SERVERS_DIR
#
# WARMPOOL_SERVERS chooses which to start (default "postgresql mariadb pgbouncer").
# WARMPOOL_PG_OPTIONS and WARMPOOL_MYSQL_OPTIONS add server options after the defaults (which they
# override), e.g. "-c max_connections=20" and "--max-connections=20 --extra-port=PORT" for the
# fleet benchmark (tests/fleet); blank-separated words, no quoting. Unset: the defaults below.
#
# What the tests get (all exported):
#   WARMPOOL_TEST_PG, WARMPOOL_TEST_POSTGRESQL   SOCI connect string of the PostgreSQL server
#                                                (plain TCP: sslmode=disable)
#   WARMPOOL_TEST_MYSQL                          SOCI connect string of the MariaDB server (plain)
#   WARMPOOL_TEST_PGBOUNCER                      SOCI connect string through PgBouncer (plain)
#   WARMPOOL_TEST_PG_TLS      the PostgreSQL server over TLS: role warmpool_tls, which pg_hba.conf
#                             admits only over TLS (hostssl), sslmode=verify-full against the CA
#   WARMPOOL_TEST_MYSQL_TLS   the MariaDB server over TLS: user warmpool_tls, created REQUIRE SSL,
#                             sslca=the CA (which turns TLS on in Connector/C)
#   WARMPOOL_TEST_TLS_CA      the throwaway CA's certificate (PEM) both servers' certificates
#                             chain to
# PostgreSQL trusts every role on loopback but two: warmpool_tls (TLS only, above) and
# warmpool_rotating (scram-sha-256: a password is checked), which tests create and drop.
# Both servers accept TLS and plain connections on the same port. The CA and the server
# certificate (CN 127.0.0.1, SAN IP:127.0.0.1 and DNS:localhost, EC P-256, valid two days) are
# made fresh at every start, in $WARMPOOL_TEST_SERVERS_DIR/tls; the CA's key is deleted once it
# signed, and each server reads its own copy of the server key (mode 0600, owned by its user).
#   WARMPOOL_TEST_PG_CTL, WARMPOOL_TEST_MYSQL_CTL, WARMPOOL_TEST_PGBOUNCER_CTL
#       a command taking one argument, for tests that break the server on purpose:
#         stop       clean shutdown, waits until it is down
#         start      start again on the same port, waits until it accepts connections
#         restart    stop + start
#         kill       SIGKILL the server (PostgreSQL: an immediate shutdown, as a crash does)
#         terminate  close every client connection to warmpool_test, server keeps running
#         status     exit 0 when it is up
#   WARMPOOL_TEST_SIGSTOP=1    the tests may SIGSTOP/SIGCONT the PostgreSQL backend processes
#   WARMPOOL_TEST_SERVERS_DIR  the temporary directory: data, logs, sockets, pid files

_wps_say() { echo "servers: $*" >&2; }

_wps_pg_bin() {
    local dir
    for dir in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            echo "$dir"
            return 0
        fi
    done
    command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)" && return 0
    return 1
}

# Three distinct free ports: all sockets stay bound until every port is chosen.
_wps_free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# Runs a command as the given system user when we are root (PostgreSQL and PgBouncer refuse to
# run as root); as ourselves otherwise.
_wps_as() {
    local user="$1"
    shift
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

_wps_ensure_user() {
    local user="$1"
    if [[ "$(id -u)" == 0 ]] && ! id "$user" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    fi
}

_wps_owned_dir() {
    local user="$1" dir="$2"
    mkdir -p "$dir"
    if [[ "$(id -u)" == 0 ]]; then
        chown "$user:" "$dir"
    fi
    chmod 700 "$dir"
}

_wps_fail() {
    local what="$1" log="$2"
    _wps_say "$what"
    if [[ -n "$log" && -f "$log" ]]; then
        _wps_say "last lines of $log:"
        tail -n 30 "$log" | sed 's/^/    /' >&2
    fi
    return 1
}

# ---------------------------------------------------------------------------------------------
# A throwaway CA and a server certificate signed by it, for both servers' TLS. EC P-256 keys:
# generated in milliseconds, where RSA would slow every start. Two days of validity: long
# enough for a test run, short enough that a leaked file is worth nothing. The CA's key is
# deleted once it signed, so nothing else can ever be issued under this CA.
_wps_make_tls() {
    local dir="$WARMPOOL_TEST_SERVERS_DIR/tls"
    if ! command -v openssl >/dev/null 2>&1; then
        _wps_fail "openssl not found (Debian: openssl); the servers need it for their TLS certificates"
        return 1
    fi
    mkdir -p "$dir"
    # Our own configuration, not the system's openssl.cnf: the same certificates everywhere.
    cat >"$dir/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
    local serial
    serial="0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    # One && chain: `set -e` would be ignored here, inside the condition of an if.
    if ! (
        cd "$dir" &&
            openssl req -x509 -new -config openssl.cnf -extensions ca_ext -newkey ec \
                -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 2 \
                -subj "/CN=warmpool throwaway test CA" &&
            openssl req -new -config openssl.cnf -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
                -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" &&
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial "$serial" \
                -days 2 -extfile openssl.cnf -extensions server_ext -out server.crt &&
            rm -f ca.key server.csr &&
            chmod 644 ca.crt server.crt &&
            chmod 600 server.key
    ) >"$dir/openssl.log" 2>&1; then
        _wps_fail "making the TLS certificates failed" "$dir/openssl.log"
        return 1
    fi
    export WARMPOOL_TEST_TLS_CA="$dir/ca.crt"
}

# Copies the server key where a server reads it: mode 0600 and owned by the server's user, which
# PostgreSQL insists on, and MariaDB needs to read it at all.
_wps_install_key() {
    local user="$1" to="$2"
    install -m 600 "$WARMPOOL_TEST_SERVERS_DIR/tls/server.key" "$to"
    if [[ "$(id -u)" == 0 ]]; then
        chown "$user:" "$to"
    fi
}

# ---------------------------------------------------------------------------------------------
_wps_start_postgresql() {
    local pg_bin port="$1" dir="$WARMPOOL_TEST_SERVERS_DIR/postgresql"
    pg_bin="$(_wps_pg_bin)" || { _wps_fail "PostgreSQL's initdb/pg_ctl not found (Debian: postgresql)"; return 1; }
    _wps_ensure_user postgres
    _wps_owned_dir postgres "$dir"
    local data="$dir/data" log="$dir/server.log"
    if ! _wps_as postgres "$pg_bin/initdb" -D "$data" -U warmpool -A trust -E UTF8 --no-locale \
        --no-sync >"$dir/initdb.log" 2>&1; then
        _wps_fail "PostgreSQL initdb failed" "$dir/initdb.log"
        return 1
    fi
    # TLS on the same port as plain TCP; which a client gets is its sslmode's choice, and
    # pg_hba.conf's for role warmpool_tls: TLS only.
    _wps_install_key postgres "$dir/server.key"
    cat - "$data/pg_hba.conf" >"$data/pg_hba.conf.new" <<HBA
# warmpool's tests: role warmpool_tls proves a session is encrypted, so it gets in over TLS only.
hostnossl all warmpool_tls all reject
hostssl all warmpool_tls 127.0.0.1/32 trust
# Role warmpool_rotating (created by the credential rotation tests) must give its password.
host all warmpool_rotating 127.0.0.1/32 scram-sha-256
HBA
    mv "$data/pg_hba.conf.new" "$data/pg_hba.conf"
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres: "$data/pg_hba.conf"
    fi
    # fsync off: a test server's data is thrown away, and the tests restart it often.
    local opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=50 -c fsync=off"
    opts+=" -c ssl=on -c ssl_cert_file=$WARMPOOL_TEST_SERVERS_DIR/tls/server.crt"
    opts+=" -c ssl_key_file=$dir/server.key"
    [[ -z "${WARMPOOL_PG_OPTIONS:-}" ]] || opts+=" $WARMPOOL_PG_OPTIONS"
    cat >"$WARMPOOL_TEST_SERVERS_DIR/pg_ctl" <<CTL
#!/usr/bin/env bash
# Controls the PostgreSQL server of warmpool's tests (see scripts/servers.sh).
set -u
# A daemon started from here must not inherit the caller's descriptors: a pipe held open by the
# server would keep whoever reads that pipe (a test runner, tee) waiting for its end forever.
for fd in /proc/\$\$/fd/*; do n=\${fd##*/}; (( n > 2 && n < 255 )) && eval "exec \$n>&-" 2>/dev/null; done
as() { if [[ "\$(id -u)" == 0 ]]; then runuser -u postgres -- "\$@"; else "\$@"; fi; }
ctl() { as "$pg_bin/pg_ctl" -D "$data" -l "$log" -w -t 60 "\$@" >/dev/null; }
case "\${1:-}" in
start) ctl -o "$opts" start ;;
stop) ctl -m fast stop ;;
restart) ctl -m fast -o "$opts" restart ;;
kill) ctl -m immediate stop ;;
terminate)
    "$pg_bin/psql" -X -q -h 127.0.0.1 -p $port -U warmpool -d postgres -Atc \
        "select count(pg_terminate_backend(pid)) from pg_stat_activity
         where datname = 'warmpool_test' and pid <> pg_backend_pid()" >/dev/null ;;
status) "$pg_bin/pg_isready" -q -h 127.0.0.1 -p $port ;;
*) echo "usage: \$0 start|stop|restart|kill|terminate|status" >&2; exit 2 ;;
esac
CTL
    chmod 755 "$WARMPOOL_TEST_SERVERS_DIR/pg_ctl"
    if ! "$WARMPOOL_TEST_SERVERS_DIR/pg_ctl" start; then
        _wps_fail "PostgreSQL did not start on 127.0.0.1:$port" "$log"
        return 1
    fi
    echo "$pg_bin" >"$dir/bin" # for warmpool_servers_stop
    local i
    for ((i = 0; i < 60; i++)); do
        "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
        sleep 0.5
    done
    if ! "$pg_bin/psql" -X -q -h 127.0.0.1 -p "$port" -U warmpool -d postgres \
        -c "create database warmpool_test" -c "create role warmpool_tls login superuser" \
        >>"$dir/setup.log" 2>&1; then
        _wps_fail "PostgreSQL on 127.0.0.1:$port accepts no connections" "$log"
        return 1
    fi
    local tls="host=127.0.0.1 port=$port dbname=warmpool_test user=warmpool_tls"
    tls+=" sslmode=verify-full sslrootcert=$WARMPOOL_TEST_TLS_CA"
    if ! "$pg_bin/psql" -X -q "$tls" -Atc "select 1 from pg_stat_ssl where pid = pg_backend_pid() and ssl" \
        2>>"$dir/setup.log" | grep -qx 1; then
        _wps_fail "PostgreSQL on 127.0.0.1:$port refuses TLS (sslmode=verify-full) for role warmpool_tls" "$dir/setup.log"
        return 1
    fi
    # sslmode=disable: the default (prefer) would take TLS now that the server offers it, and
    # every other test means plain TCP.
    export WARMPOOL_TEST_PG="postgresql://host=127.0.0.1 port=$port dbname=warmpool_test user=warmpool sslmode=disable"
    export WARMPOOL_TEST_PG_TLS="postgresql://$tls"
    export WARMPOOL_TEST_POSTGRESQL="$WARMPOOL_TEST_PG"
    export WARMPOOL_TEST_PG_CTL="$WARMPOOL_TEST_SERVERS_DIR/pg_ctl"
    export WARMPOOL_TEST_PG_PORT="$port"
    export WARMPOOL_TEST_PG_LOG="$log"
    if [[ "$(id -u)" == 0 ]]; then
        export WARMPOOL_TEST_SIGSTOP=1
    fi
    _wps_say "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

# ---------------------------------------------------------------------------------------------
_wps_start_mariadb() {
    local port="$1" dir="$WARMPOOL_TEST_SERVERS_DIR/mariadb"
    local mysqld install_db client admin
    # "|| true": callers may run under set -e, and a missing program is reported below.
    mysqld="$(command -v mariadbd || command -v mysqld || ls /usr/sbin/mariadbd 2>/dev/null)" || true
    install_db="$(command -v mariadb-install-db || command -v mysql_install_db)" || true
    client="$(command -v mariadb || command -v mysql)" || true
    admin="$(command -v mariadb-admin || command -v mysqladmin)" || true
    if [[ -z "$mysqld" || -z "$install_db" || -z "$client" || -z "$admin" ]]; then
        _wps_fail "MariaDB's server or client not found (Debian: mariadb-server)"
        return 1
    fi
    local user_opt=() run_user
    run_user="$(id -un)"
    if [[ "$(id -u)" == 0 ]]; then
        _wps_ensure_user mysql
        run_user=mysql
        user_opt=(--user=mysql)
    fi
    _wps_owned_dir "$run_user" "$dir"
    local data="$dir/data" log="$dir/server.log" sock="$dir/mysqld.sock" pidf="$dir/mysqld.pid"
    if ! "$install_db" --no-defaults --datadir="$data" "${user_opt[@]}" \
        --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1; then
        _wps_fail "mariadb-install-db failed" "$dir/install.log"
        return 1
    fi
    _wps_install_key "$run_user" "$dir/server.key"
    local tls_dir="$WARMPOOL_TEST_SERVERS_DIR/tls"
    local start_cmd="$mysqld --no-defaults --datadir=$data --socket=$sock --port=$port"
    # TLS on the same port; user warmpool_tls must use it (REQUIRE SSL), user warmpool need not.
    start_cmd+=" --ssl-cert=$tls_dir/server.crt --ssl-key=$dir/server.key --ssl-ca=$tls_dir/ca.crt"
    start_cmd+=" --bind-address=127.0.0.1 --pid-file=$pidf --log-error=$log --skip-name-resolve"
    start_cmd+=" --skip-log-bin --innodb-buffer-pool-size=64M --max-connections=100 ${user_opt[*]}"
    [[ -z "${WARMPOOL_MYSQL_OPTIONS:-}" ]] || start_cmd+=" $WARMPOOL_MYSQL_OPTIONS"
    cat >"$WARMPOOL_TEST_SERVERS_DIR/mysql_ctl" <<CTL
#!/usr/bin/env bash
# Controls the MariaDB server of warmpool's tests (see scripts/servers.sh).
set -u
# A daemon started from here must not inherit the caller's descriptors: a pipe held open by the
# server would keep whoever reads that pipe (a test runner, tee) waiting for its end forever.
for fd in /proc/\$\$/fd/*; do n=\${fd##*/}; (( n > 2 && n < 255 )) && eval "exec \$n>&-" 2>/dev/null; done
up() { "$admin" --no-defaults --socket="$sock" -uroot --connect-timeout=2 ping >/dev/null 2>&1; }
pid() { cat "$pidf" 2>/dev/null; }
wait_up() {
    for ((i = 0; i < 120; i++)); do up && return 0; sleep 0.5; done
    echo "MariaDB did not come up; see $log" >&2; return 1
}
wait_down() {
    local p="\$1"
    for ((i = 0; i < 120; i++)); do kill -0 "\$p" 2>/dev/null || return 0; sleep 0.5; done
    echo "MariaDB (pid \$p) did not stop" >&2; return 1
}
start() { nohup $start_cmd >/dev/null 2>&1 </dev/null & wait_up; }
stop() {
    local p; p="\$(pid)"
    "$admin" --no-defaults --socket="$sock" -uroot shutdown >/dev/null 2>&1 || true
    [[ -z "\$p" ]] || wait_down "\$p"
}
case "\${1:-}" in
start) start ;;
stop) stop ;;
restart) stop && start ;;
kill) p="\$(pid)"; [[ -n "\$p" ]] && kill -KILL "\$p" && wait_down "\$p" ;;
terminate)
    "$client" --no-defaults --socket="$sock" -uroot -N -e \
        "select concat('KILL ', id, ';') from information_schema.processlist
         where user in ('warmpool', 'warmpool_tls')" |
        "$client" --no-defaults --socket="$sock" -uroot -f >/dev/null 2>&1 || true ;;
status) up ;;
*) echo "usage: \$0 start|stop|restart|kill|terminate|status" >&2; exit 2 ;;
esac
CTL
    chmod 755 "$WARMPOOL_TEST_SERVERS_DIR/mysql_ctl"
    if ! "$WARMPOOL_TEST_SERVERS_DIR/mysql_ctl" start; then
        _wps_fail "MariaDB did not start on 127.0.0.1:$port" "$log"
        return 1
    fi
    local password="warmpool-test" tls_password="warmpool-tls-test"
    if ! "$client" --no-defaults --socket="$sock" -uroot >"$dir/setup.log" 2>&1 <<SQL; then
CREATE DATABASE warmpool_test;
CREATE USER 'warmpool'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE USER 'warmpool'@'localhost' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON *.* TO 'warmpool'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'warmpool'@'localhost';
CREATE USER 'warmpool_tls'@'127.0.0.1' IDENTIFIED BY '$tls_password' REQUIRE SSL;
CREATE USER 'warmpool_tls'@'localhost' IDENTIFIED BY '$tls_password' REQUIRE SSL;
GRANT ALL PRIVILEGES ON *.* TO 'warmpool_tls'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'warmpool_tls'@'localhost';
SQL
        _wps_fail "MariaDB setup (database warmpool_test, users warmpool and warmpool_tls) failed" "$dir/setup.log"
        return 1
    fi
    if ! "$client" --no-defaults -h 127.0.0.1 -P "$port" -uwarmpool -p"$password" warmpool_test \
        -e "select 1" >>"$dir/setup.log" 2>&1; then
        _wps_fail "MariaDB on 127.0.0.1:$port refuses user warmpool" "$dir/setup.log"
        return 1
    fi
    if ! "$client" --no-defaults -h 127.0.0.1 -P "$port" -uwarmpool_tls -p"$tls_password" \
        --ssl-ca="$tls_dir/ca.crt" --ssl-verify-server-cert warmpool_test -N \
        -e "show status like 'Ssl_cipher'" 2>>"$dir/setup.log" | grep -q 'Ssl_cipher[[:space:]]*[^[:space:]]'; then
        _wps_fail "MariaDB on 127.0.0.1:$port refuses TLS for user warmpool_tls" "$dir/setup.log"
        return 1
    fi
    export WARMPOOL_TEST_MYSQL="mysql://host=127.0.0.1 port=$port db=warmpool_test user=warmpool password=$password"
    # SOCI 4.0.3 passes sslca (with sslcert and sslkey, if given) to mysql_ssl_set, which turns
    # TLS on and makes Connector/C check the server's certificate chain against that CA.
    export WARMPOOL_TEST_MYSQL_TLS="mysql://host=127.0.0.1 port=$port db=warmpool_test user=warmpool_tls password=$tls_password sslca=$tls_dir/ca.crt"
    export WARMPOOL_TEST_MYSQL_CTL="$WARMPOOL_TEST_SERVERS_DIR/mysql_ctl"
    export WARMPOOL_TEST_MYSQL_PORT="$port"
    export WARMPOOL_TEST_MYSQL_LOG="$log"
    _wps_say "MariaDB $("$mysqld" --version | grep -o '[0-9][0-9.]*-MariaDB' | head -1) on 127.0.0.1:$port"
}

# ---------------------------------------------------------------------------------------------
_wps_start_pgbouncer() {
    local port="$1" pg_port="$2" dir="$WARMPOOL_TEST_SERVERS_DIR/pgbouncer" bouncer pg_bin
    bouncer="$(command -v pgbouncer || ls /usr/sbin/pgbouncer 2>/dev/null)" || true
    pg_bin="$(_wps_pg_bin)" || true
    if [[ -z "$bouncer" ]]; then
        _wps_fail "pgbouncer not found (Debian: pgbouncer)"
        return 1
    fi
    if [[ -z "$pg_port" ]]; then
        _wps_fail "PgBouncer needs the PostgreSQL server, which is not running"
        return 1
    fi
    _wps_ensure_user postgres
    _wps_owned_dir postgres "$dir"
    local log="$dir/pgbouncer.log" pidf="$dir/pgbouncer.pid" ini="$dir/pgbouncer.ini"
    # Trust: the server behind it trusts loopback too; a user must still be listed in auth_file.
    echo '"warmpool" ""' >"$dir/userlist.txt"
    cat >"$ini" <<INI
[databases]
warmpool_test = host=127.0.0.1 port=$pg_port dbname=warmpool_test

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = warmpool
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
logfile = $log
pidfile = $pidf
INI
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres: "$dir/userlist.txt" "$ini"
    fi
    cat >"$WARMPOOL_TEST_SERVERS_DIR/pgbouncer_ctl" <<CTL
#!/usr/bin/env bash
# Controls the PgBouncer of warmpool's tests (see scripts/servers.sh).
set -u
# A daemon started from here must not inherit the caller's descriptors: a pipe held open by the
# server would keep whoever reads that pipe (a test runner, tee) waiting for its end forever.
for fd in /proc/\$\$/fd/*; do n=\${fd##*/}; (( n > 2 && n < 255 )) && eval "exec \$n>&-" 2>/dev/null; done
as() { if [[ "\$(id -u)" == 0 ]]; then runuser -u postgres -- "\$@"; else "\$@"; fi; }
up() { "$pg_bin/psql" -X -q -h 127.0.0.1 -p $port -U warmpool -d warmpool_test -Atc "select 1" >/dev/null 2>&1; }
pid() { cat "$pidf" 2>/dev/null; }
wait_up() {
    for ((i = 0; i < 60; i++)); do up && return 0; sleep 0.5; done
    echo "PgBouncer did not come up; see $log" >&2; return 1
}
wait_down() {
    local p="\$1"
    for ((i = 0; i < 60; i++)); do kill -0 "\$p" 2>/dev/null || return 0; sleep 0.5; done
    echo "PgBouncer (pid \$p) did not stop" >&2; return 1
}
case "\${1:-}" in
start) as "$bouncer" -d -q "$ini" && wait_up ;;
stop) p="\$(pid)"; [[ -z "\$p" ]] || { kill -INT "\$p" 2>/dev/null; wait_down "\$p"; } ;;
restart) "\$0" stop && "\$0" start ;;
kill) p="\$(pid)"; [[ -z "\$p" ]] || { kill -KILL "\$p" 2>/dev/null; wait_down "\$p"; rm -f "$pidf"; } ;;
terminate) "$pg_bin/psql" -X -q -h 127.0.0.1 -p $port -U warmpool -d pgbouncer -c "KILL warmpool_test" >/dev/null 2>&1
           "$pg_bin/psql" -X -q -h 127.0.0.1 -p $port -U warmpool -d pgbouncer -c "RESUME warmpool_test" >/dev/null 2>&1 ;;
status) up ;;
*) echo "usage: \$0 start|stop|restart|kill|terminate|status" >&2; exit 2 ;;
esac
CTL
    chmod 755 "$WARMPOOL_TEST_SERVERS_DIR/pgbouncer_ctl"
    if ! "$WARMPOOL_TEST_SERVERS_DIR/pgbouncer_ctl" start; then
        _wps_fail "PgBouncer did not start on 127.0.0.1:$port" "$log"
        return 1
    fi
    export WARMPOOL_TEST_PGBOUNCER="postgresql://host=127.0.0.1 port=$port dbname=warmpool_test user=warmpool"
    export WARMPOOL_TEST_PGBOUNCER_CTL="$WARMPOOL_TEST_SERVERS_DIR/pgbouncer_ctl"
    export WARMPOOL_TEST_PGBOUNCER_PORT="$port"
    _wps_say "PgBouncer $("$bouncer" --version | head -1 | awk '{print $2}') (transaction pooling) on 127.0.0.1:$port"
}

# ---------------------------------------------------------------------------------------------
# Starts the servers named in WARMPOOL_SERVERS. Returns non-zero when any failed to start; those
# that did start stay up (and are stopped by warmpool_servers_stop).
warmpool_servers_start() {
    local wanted="${WARMPOOL_SERVERS:-postgresql mariadb pgbouncer}" status=0
    export WARMPOOL_TEST_SERVERS_DIR
    WARMPOOL_TEST_SERVERS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/warmpool-servers.XXXXXX")"
    chmod 755 "$WARMPOOL_TEST_SERVERS_DIR" # the server users must reach their subdirectories
    read -r pg_port my_port pb_port <<<"$(_wps_free_ports 3)"
    if [[ " $wanted " == *" postgresql "* || " $wanted " == *" mariadb "* ]]; then
        _wps_make_tls || return 1
    fi
    local started_pg=""
    if [[ " $wanted " == *" postgresql "* ]]; then
        if _wps_start_postgresql "$pg_port"; then started_pg="$pg_port"; else status=1; fi
    fi
    if [[ " $wanted " == *" mariadb "* ]]; then
        _wps_start_mariadb "$my_port" || status=1
    fi
    if [[ " $wanted " == *" pgbouncer "* ]]; then
        _wps_start_pgbouncer "$pb_port" "$started_pg" || status=1
    fi
    return $status
}

# Stops every server warmpool_servers_start started (by their own pid files and control scripts)
# and removes the directory. Safe to call twice.
warmpool_servers_stop() {
    local dir="${1:-${WARMPOOL_TEST_SERVERS_DIR:-}}"
    [[ -n "$dir" && -d "$dir" && "$(basename "$dir")" == warmpool-servers.* ]] || return 0
    local ctl
    for ctl in pgbouncer_ctl mysql_ctl; do
        if [[ -x "$dir/$ctl" ]]; then
            "$dir/$ctl" stop >/dev/null 2>&1 || true
        fi
    done
    if [[ -x "$dir/pg_ctl" ]]; then
        "$dir/pg_ctl" stop >/dev/null 2>&1 || "$dir/pg_ctl" kill >/dev/null 2>&1
    fi
    # Last resort for anything that ignored its stop: only pids from our own pid files.
    local pidf pid
    for pidf in "$dir/pgbouncer/pgbouncer.pid" "$dir/mariadb/mysqld.pid" "$dir/postgresql/data/postmaster.pid"; do
        pid="$(head -n 1 "$pidf" 2>/dev/null)" || true
        if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    rm -rf "$dir"
    if [[ "$dir" == "${WARMPOOL_TEST_SERVERS_DIR:-}" ]]; then
        unset WARMPOOL_TEST_SERVERS_DIR
    fi
    return 0
}

# --- Standalone use ---------------------------------------------------------------------------
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -uo pipefail
    case "${1:-start}" in
    start)
        if ! warmpool_servers_start; then
            warmpool_servers_stop
            exit 1
        fi
        env | grep -E '^WARMPOOL_TEST_' | sort | while IFS='=' read -r name value; do
            printf 'export %s=%q\n' "$name" "$value"
        done
        _wps_say "stop them with: bash scripts/servers.sh stop"
        ;;
    stop)
        warmpool_servers_stop "${2:-${WARMPOOL_TEST_SERVERS_DIR:-}}"
        ;;
    *)
        echo "usage: $0 [start|stop [DIR]]" >&2
        exit 2
        ;;
    esac
fi
