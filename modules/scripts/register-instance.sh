#!/usr/bin/env bash
# nix-infra register-instance: announce one app instance in the mesh while it is healthy.
#
# Puts /cluster/<group>/<app>/instances/<node> = {"ipv4","node","port"} under an
# etcd lease once the health command succeeds, keeps the lease alive while it
# keeps succeeding, and deletes the key and revokes the lease as soon as it
# fails or this script is stopped (SIGTERM/SIGINT). If the script dies without
# cleaning up (SIGKILL, node crash), the lease expires after --ttl seconds and
# etcd drops the key. Health coming back registers the instance again. While
# healthy, it also checks the key every interval and puts it back under its
# lease if it is missing or differs (deleted or overwritten by someone else).
#
# etcd is reached with etcdctl (v3 API); endpoints and TLS files come from the
# environment, as etcdctl reads them: ETCDCTL_ENDPOINTS, ETCDCTL_CACERT,
# ETCDCTL_CERT, ETCDCTL_KEY. The NixOS apps module runs this as a unit bound to
# the app's unit (modules/apps.nix); docs/etcd.md describes the lease semantics.
set -uo pipefail

usage() {
  cat <<'EOF'
Usage: register-instance --app NAME --group GROUP --node NAME --address IPV4 --port PORT
                         --health-cmd CMD [--ttl SECONDS] [--interval SECONDS] [--health-timeout SECONDS]

  --group           frontends | backends | services
  --health-cmd      shell command; exit 0 = healthy (e.g. "curl -fsS http://127.0.0.1:8080/")
  --ttl             lease TTL: how long a dead instance stays registered (default 10)
  --interval        seconds between health checks and lease renewals (default 3; < ttl)
  --health-timeout  seconds before a health check counts as failed (default: interval)

Example:
  ETCDCTL_ENDPOINTS=https://10.10.32.1:2379 ETCDCTL_CACERT=ca.crt ETCDCTL_CERT=c.crt ETCDCTL_KEY=c.key \
    register-instance --app api --group backends --node worker001 --address 10.10.64.1 --port 8080 \
      --health-cmd 'curl -fsS http://127.0.0.1:8080/' --ttl 10 --interval 3
EOF
}

die() { echo "register-instance: $*" >&2; exit 2; }
log() { echo "register-instance[$app]: $*" >&2; }

app="" group="" node="" address="" port="" health_cmd="" ttl=10 interval=3 health_timeout=""
while (($#)); do
  case "$1" in
    --app) app=${2-}; shift 2 ;;
    --group) group=${2-}; shift 2 ;;
    --node) node=${2-}; shift 2 ;;
    --address) address=${2-}; shift 2 ;;
    --port) port=${2-}; shift 2 ;;
    --health-cmd) health_cmd=${2-}; shift 2 ;;
    --ttl) ttl=${2-}; shift 2 ;;
    --interval) interval=${2-}; shift 2 ;;
    --health-timeout) health_timeout=${2-}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

name_re='^[a-z0-9]([a-z0-9-]*[a-z0-9])?$'
[[ $app =~ $name_re ]] || die "--app: '$app' is not a name (lowercase letters, digits, '-')"
[[ $node =~ $name_re ]] || die "--node: '$node' is not a name (lowercase letters, digits, '-')"
case "$group" in frontends | backends | services) ;; *) die "--group: '$group' is not allowed; expected frontends, backends or services" ;; esac
[[ $address =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "--address: '$address' is not an IPv4 address"
[[ $port =~ ^[0-9]+$ ]] && ((port >= 1 && port <= 65535)) || die "--port: '$port' is not a port (1-65535)"
[[ -n $health_cmd ]] || die "--health-cmd is required"
[[ $ttl =~ ^[0-9]+$ ]] && ((ttl >= 2)) || die "--ttl: '$ttl' must be whole seconds, at least 2"
[[ $interval =~ ^[0-9]+$ ]] && ((interval >= 1 && interval < ttl)) || die "--interval: '$interval' must be whole seconds, at least 1 and below --ttl ($ttl)"
health_timeout=${health_timeout:-$interval}
[[ $health_timeout =~ ^[0-9]+$ ]] && ((health_timeout >= 1)) || die "--health-timeout: '$health_timeout' must be whole seconds, at least 1"
[[ -n ${ETCDCTL_ENDPOINTS-} ]] || die "ETCDCTL_ENDPOINTS is not set (and ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY for TLS)"
export ETCDCTL_API=3

key="/cluster/$group/$app/instances/$node"
# canonical JSON (sorted keys, compact), as the orchestrator writes its own keys
value="{\"ipv4\":\"$address\",\"node\":\"$node\",\"port\":$port}"
value_b64=$(printf '%s' "$value" | base64 -w0)
lease=""

healthy() { timeout "$health_timeout" bash -c "$health_cmd" >/dev/null 2>&1; }

register() {
  local out
  out=$(etcdctl --command-timeout=5s lease grant "$ttl" 2>&1) || { log "etcd: lease grant failed: $out"; return 1; }
  lease=$(awk '$1 == "lease" { print $2; exit }' <<<"$out")
  [[ -n $lease ]] || { log "etcd: unexpected lease grant output: $out"; return 1; }
  if ! out=$(etcdctl --command-timeout=5s put --lease="$lease" "$key" "$value" 2>&1); then
    log "etcd: put $key failed: $out"
    etcdctl --command-timeout=5s lease revoke "$lease" >/dev/null 2>&1
    lease=""
    return 1
  fi
  log "registered $key (lease $lease, ttl ${ttl}s)"
}

deregister() {
  [[ -n $lease ]] || return 0
  etcdctl --command-timeout=5s del "$key" >/dev/null 2>&1 || log "etcd: del $key failed; the lease expires in ${ttl}s"
  etcdctl --command-timeout=5s lease revoke "$lease" >/dev/null 2>&1
  log "deregistered $key"
  lease=""
}

renew() {
  local out
  # bounded from outside: etcdctl 3.4's keep-alive --once ignores --command-timeout and can hang
  if out=$(timeout 10 etcdctl --command-timeout=5s lease keep-alive --once "$lease" 2>&1) && [[ $out == *"keepalived"* ]]; then
    return 0
  fi
  if [[ $out == *"expired"* || $out == *"not found"* || $out == *"revoked"* ]]; then
    log "lease $lease is gone ($out); registering again"
    lease=""
  else
    log "etcd: keep-alive failed: $out"
  fi
  return 1
}

# The key must hold our value under our lease. Someone may have deleted it
# (`etcdctl del`), overwritten it, or put it without a lease; put it back under
# our lease. etcdctl's JSON output carries the value in base64 and the lease
# in decimal (absent when none).
heal() {
  local out have_value="" have_lease=""
  if ! out=$(etcdctl --command-timeout=5s get "$key" -w json 2>&1); then
    log "etcd: get $key failed: $out"
    return 1
  fi
  [[ $out =~ \"value\":\"([^\"]*)\" ]] && have_value=${BASH_REMATCH[1]}
  [[ $out =~ \"lease\":([0-9]+) ]] && have_lease=${BASH_REMATCH[1]}
  [[ $have_value == "$value_b64" && $have_lease == "$((16#$lease))" ]] && return 0
  if ! out=$(etcdctl --command-timeout=5s put --lease="$lease" "$key" "$value" 2>&1); then
    log "etcd: put $key failed: $out"
    return 1
  fi
  local was="missing"
  [[ -z $have_value ]] || was=$([[ $have_value == "$value_b64" ]] && echo "not under lease $lease" || echo "changed")
  log "$key was $was; put it back (lease $lease)"
}

on_stop() {
  deregister
  exit 0
}
trap on_stop TERM INT

log "waiting for $app to be healthy before registering $key"
while true; do
  if healthy; then
    if [[ -z $lease ]]; then
      register
    else
      if renew; then
        heal
      elif [[ -z $lease ]]; then
        register
      fi
    fi
  elif [[ -n $lease ]]; then
    log "health check failed"
    deregister
  fi
  # sleep in the background so SIGTERM is handled at once, not after the sleep
  sleep "$interval" &
  wait $!
done
