# Shell helpers shared by scripts/test, scripts/odoo_suite and scripts/run.
# shellcheck shell=bash

CACHE=${SAAS_MANAGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/saas_manager}

log() { echo "[saas_manager] $*" >&2; }
die() { log "error: $*"; exit 2; }

# Print the directory of an Odoo 18.0 tree (holding odoo-bin and odoo/), or fail.
find_odoo_src() {
    local candidate
    for candidate in "${ODOO_SRC:-}" /opt/odoo-18.0; do
        [ -n "$candidate" ] || continue
        if [ -f "$candidate/odoo-bin" ] && [ -f "$candidate/odoo/release.py" ] \
            && grep -qE "^version_info = \(18, 0," "$candidate/odoo/release.py"; then
            (cd "$candidate" && pwd)
            return 0
        fi
        [ "$candidate" = "${ODOO_SRC:-}" ] && log "ODOO_SRC=$candidate holds no Odoo 18.0 tree (odoo-bin and odoo/release.py)"
    done
    return 1
}

# Install the Debian packages that are missing (as root), or say how to.
ensure_debs() {
    local missing=() pkg
    for pkg in "$@"; do
        if [ "$pkg" = python3-venv ]; then
            python3 -c "import ensurepip, venv" 2>/dev/null && continue
        fi
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} = 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        log "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
        return 1
    fi
    log "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Print the path of a virtualenv holding the requirements of $2, made once per
# content of that file (and Python version) and reused afterwards.
ensure_venv() {
    local name=$1 requirements=$2 key dir
    key=$( (cat "$requirements"; python3 --version) | sha256sum | cut -c1-12)
    dir="$CACHE/venv-$name-$key"
    if [ ! -f "$dir/.complete" ]; then
        log "creating virtualenv $dir from $(basename "$requirements")"
        rm -rf "$dir"
        mkdir -p "$CACHE"
        python3 -m venv "$dir" >&2 || return 1
        "$dir/bin/pip" install -q --upgrade pip >&2 || return 1
        "$dir/bin/pip" install -q -r "$requirements" >&2 || return 1
        touch "$dir/.complete"
    fi
    echo "$dir"
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Directory of the newest PostgreSQL server binaries.
pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -x "$dir/initdb" ] || return 1
    echo "$dir"
}

# Run a PostgreSQL server binary as the postgres user when we are root
# (initdb and pg_ctl refuse to run as root).
pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# pg_cluster_start DIR PORT ROLE PASSWORD: a throwaway cluster in DIR listening on
# 127.0.0.1:PORT (socket in DIR), with a login role ROLE (CREATEDB) that
# authenticates by password. Idempotent: an existing cluster in DIR is reused.
pg_cluster_start() {
    local dir=$1 port=$2 role=$3 password=$4 bin
    bin=$(pg_bindir) || { log "no PostgreSQL server binaries (apt-get install postgresql)"; return 1; }
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir" && chmod 0700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        local pwfile="$dir/superuser.pw"
        head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$pwfile"
        [ "$(id -u)" = 0 ] && chown postgres: "$pwfile"
        pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$pwfile" -A scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
        {
            echo "listen_addresses = '127.0.0.1'"
            echo "unix_socket_directories = '$dir'"
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
            echo "max_connections = 200"
        } >> "$dir/data/postgresql.conf"
    fi
    sed -i "/^port = /d" "$dir/data/postgresql.conf"
    echo "port = $port" >> "$dir/data/postgresql.conf"
    if ! pg_as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
            || { cat "$dir/server.log" >&2; return 1; }
    fi
    PGPASSWORD=$(cat "$dir/superuser.pw") psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qtA \
        -v ON_ERROR_STOP=1 -v role="$role" -v pw="$password" >/dev/null <<'SQL' || return 1
SELECT format('CREATE ROLE %I LOGIN CREATEDB', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'pw') \gexec
SQL
}

pg_cluster_stop() {
    local dir=$1 bin
    bin=$(pg_bindir) || return 0
    [ -f "$dir/data/PG_VERSION" ] || return 0
    pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}

# sshd_start DIR PORT: a private sshd on 127.0.0.1:PORT, with its own host key
# and a client key (DIR/client_key) authorised for the current user.
sshd_start() {
    local dir=$1 port=$2
    mkdir -p "$dir" && chmod 0755 "$dir"
    [ -f "$dir/host_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C saas-test-host -f "$dir/host_ed25519"
    [ -f "$dir/client_key" ] || ssh-keygen -q -t ed25519 -N "" -C saas-test-client -f "$dir/client_key"
    cp "$dir/client_key.pub" "$dir/authorized_keys"
    cat > "$dir/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile none
UsePAM no
StrictModes no
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding no
X11Forwarding no
CONF
    [ "$(id -u)" = 0 ] && mkdir -p /run/sshd && chmod 0755 /run/sshd
    /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
    echo $! > "$dir/sshd.pid"
    local tries=0
    until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null; do
        tries=$((tries + 1))
        if [ $tries -ge 50 ] || ! kill -0 "$(cat "$dir/sshd.pid")" 2>/dev/null; then
            cat "$dir/sshd.log" >&2
            return 1
        fi
        sleep 0.1
    done
}

sshd_stop() {
    local dir=$1
    [ -f "$dir/sshd.pid" ] && kill "$(cat "$dir/sshd.pid")" 2>/dev/null
    rm -f "$dir/sshd.pid"
    return 0
}
