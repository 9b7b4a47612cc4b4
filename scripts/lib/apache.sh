# shellcheck shell=bash
# Helpers shared by scripts/demo and scripts/bench-apache: an unprivileged Apache on a loopback
# port configured from the shipped deploy/apache files, process clean-up, and the few Debian
# packages scripts/bench-apache checks for (the project's list is scripts/lib/packages.sh).
# Sourced, not run. Expects ROOT (the repository) to be set.

# shellcheck disable=SC2034  # used by the scripts that source this file
APACHE2=/usr/sbin/apache2
APACHE_MODULES_DIR=/usr/lib/apache2/modules
# What check-duo.conf needs (REFERENCE §4), plus dir and mime for the pages.
APACHE_MODULES=(mpm_event authn_core authz_core authz_user auth_form request session
  session_cookie session_crypto authnz_external dir mime)

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Run as root: directly when root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install the Debian packages whose file (path) is missing. Arguments: package=path ...
ensure_packages() {
  local missing=() spec
  for spec in "$@"; do
    [ -e "${spec#*=}" ] || missing+=("${spec%%=*}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  # Debian starts the packaged apache2 (port 80) where it can; ours runs on its own port.
  if [[ " ${missing[*]} " == *" apache2 "* ]]; then
    as_root service apache2 stop >/dev/null 2>&1 || true
  fi
}

# Wait until 127.0.0.1:$1 accepts connections, or $2 seconds; fail early if pid $3 died.
wait_for_port() {
  local port=$1 seconds=$2 pid=${3:-} i
  for ((i = 0; i < seconds * 20; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    sleep 0.05
  done
  return 1
}

# Fail if something already listens on 127.0.0.1:$1.
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A free loopback port (asks the kernel through python3 when present, else tries from 20000).
free_port() {
  local p
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    return
  fi
  for ((p = 20000 + RANDOM % 20000; ; p++)); do
    port_free "$p" && { echo "$p"; return; }
  done
}

# Stop a process we started: SIGTERM, up to 5 s, then SIGKILL. Quiet if already gone.
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# The user Apache's children (and so check-duo) run as: Apache only switches users when
# started as root.
apache_user() { if [ "$(id -u)" -eq 0 ]; then echo nobody; else id -un; fi; }
apache_group() { if [ "$(id -u)" -eq 0 ]; then echo nogroup; else id -gn; fi; }

# deploy/apache/check-duo.conf as shipped, with three substitutions and nothing else:
#   $1  the authenticator command line for DefineExternalAuth (no quotes, no spaces in paths)
#   $2  the session passphrase file
# and the session cookie's `secure` flag removed, because this runs on plain HTTP on 127.0.0.1
# and a browser never returns a `secure` cookie over plain HTTP. Production keeps the flag.
render_check_duo_conf() {
  local authenticator=$1 passphrase_file=$2 src="$ROOT/deploy/apache/check-duo.conf" out
  out=$(sed \
    -e 's#^SessionCookieName formsession path=/;httponly;secure;SameSite=Lax$#SessionCookieName formsession path=/;httponly;SameSite=Lax#' \
    -e "s#^SessionCryptoPassphraseFile /etc/check-duo/session-passphrase\$#SessionCryptoPassphraseFile $passphrase_file#" \
    -e "s#\"/usr/local/bin/check-duo -c /etc/check-duo/config.json\"#\"$authenticator\"#" \
    "$src")
  # A shipped file that no longer matches must not silently run another configuration.
  grep -q '^SessionCookieName formsession path=/;httponly;SameSite=Lax$' <<<"$out" ||
    die "$src: SessionCookieName line not found"
  grep -qF "SessionCryptoPassphraseFile $passphrase_file" <<<"$out" ||
    die "$src: SessionCryptoPassphraseFile line not found"
  grep -qF "DefineExternalAuth duo pipe \"$authenticator\"" <<<"$out" ||
    die "$src: DefineExternalAuth line not found"
  printf '%s\n' "$out"
}

# Write an httpd.conf for an unprivileged Apache on 127.0.0.1:PORT (REFERENCE §4).
#   $1 dir (ServerRoot; logs/, run/ go there)  $2 port  $3 docroot  $4 rendered check-duo.conf
#   $5 extra configuration (e.g. the protected <Location> blocks)
write_httpd_conf() {
  local dir=$1 port=$2 docroot=$3 check_duo_conf=$4 extra=${5:-} m
  mkdir -p "$dir/logs" "$dir/run"
  {
    echo "ServerRoot $dir"
    echo "ServerName 127.0.0.1"
    echo "Listen 127.0.0.1:$port"
    echo "PidFile $dir/run/httpd.pid"
    echo "DefaultRuntimeDir $dir/run"
    echo "ErrorLog $dir/logs/error.log"
    echo "LogLevel warn"
    for m in "${APACHE_MODULES[@]}"; do
      echo "LoadModule ${m}_module $APACHE_MODULES_DIR/mod_$m.so"
    done
    if [ "$(id -u)" -eq 0 ]; then
      echo "User $(apache_user)"
      echo "Group $(apache_group)"
    fi
    echo "TypesConfig /etc/mime.types"
    echo "DocumentRoot $docroot"
    echo "DirectoryIndex index.html"
    echo "Include $check_duo_conf"
    printf '%s\n' "$extra"
  } >"$dir/httpd.conf"
}
