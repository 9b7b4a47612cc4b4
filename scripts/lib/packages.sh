# shellcheck shell=bash
# The Debian packages the project's scripts and tests need, in one place: .ci/run, scripts/test
# and scripts/demo install whatever of this list is missing, so that a fresh Debian 12 with the
# Rust toolchain runs any of them. Sourced, not run.

# shellcheck disable=SC2034  # used by the scripts that source this file
# What the demo runs: Apache with the authenticator module, and htpasswd (the demo hashes its
# password with it).
CHECK_DUO_DEMO_PACKAGES=(apache2 apache2-utils libapache2-mod-authnz-external)
# What `./scripts/demo serve` needs: nginx, and htpasswd for the demo user's hash.
CHECK_DUO_DEMO_SERVE_PACKAGES=(nginx apache2-utils)

# What the tests run besides: the Redis store (and Sentinel, for the failover test), the browser
# of the end-to-end tests, TLS roots, sudo (the drop-in wrapper's test runs it), GNU time (peak
# memory in the benches and the fault tests), wrk (the load of the fault tests), lintian (the
# package test fails on any lintian error or warning) and systemd (its systemd-analyze verifies
# check-duo-serve.service in the package test; the unit is not started), and nginx and caddy
# (the proxies in front of check-duo serve in tests/serve_proxies.rs; and haproxy, same), and
# OpenLDAP's slapd with ldap-utils (tests/ldap.rs and tests/apache_e2e.rs build a directory of
# their own with slapadd, run slapd unprivileged on a loopback port and change entries with
# ldapmodify).
CHECK_DUO_PACKAGES=(
  "${CHECK_DUO_DEMO_PACKAGES[@]}"
  redis-server redis-sentinel chromium chromium-driver ca-certificates sudo time wrk
  lintian systemd nginx caddy haproxy slapd ldap-utils
)

# The services Debian starts when those packages are installed, where it can. Every test starts
# its own servers on loopback ports, so the packaged ones are stopped.
CHECK_DUO_SERVICES=(redis-server redis-sentinel apache2 nginx caddy haproxy slapd)

# Print, one a line, the packages named (default: CHECK_DUO_PACKAGES) that are not installed.
missing_packages() {
  local p
  [ $# -gt 0 ] || set -- "${CHECK_DUO_PACKAGES[@]}"
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] ||
      printf '%s\n' "$p"
  done
}

# Install what missing_packages prints for the packages named (default: CHECK_DUO_PACKAGES), with
# sudo when not root, then stop the services of the packages just installed. Does nothing, not
# even apt-get update, when nothing is missing.
install_missing_packages() {
  local missing=() as_root=() s
  mapfile -t missing < <(missing_packages "$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  printf 'installing: %s\n' "${missing[*]}" >&2
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for s in "${CHECK_DUO_SERVICES[@]}"; do
    if [[ " ${missing[*]} " == *" $s "* ]]; then
      "${as_root[@]}" service "$s" stop >/dev/null 2>&1 || true
    fi
  done
}

# Stop every service of CHECK_DUO_SERVICES, installed now or before (CI, as root).
stop_packaged_services() {
  local s
  for s in "${CHECK_DUO_SERVICES[@]}"; do
    service "$s" stop >/dev/null 2>&1 || true
  done
}
