#!/usr/bin/env bash
# stop-servers.sh DIR — stop the servers started by servers.sh DIR, using only their pid files.
#
# Each daemon (peers-oauth, dovecot master, postfix master) leads its own session, so after
# SIGTERM to the master we wait (bounded) until no process of that session is left, then
# SIGKILL any straggler of that session by pid. Nothing else on the machine is touched.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
[ -d "$1" ] || { echo "stop.sh: no such directory: $1" >&2; exit 1; }
DIR=$(cd "$1" && pwd)
TIMEOUT=${PEERS_STOP_TIMEOUT:-15}

# Live (non-zombie) members of session $1. Exited daemons are reparented to init and may stay
# zombies for a while until it reaps them; they hold no ports or files, so they count as gone.
session_pids() { ps -e -o pid=,sid=,stat= | awk -v s="$1" '$2 == s && $3 !~ /^Z/ { print $1 }'; }
alive() { [ -e "/proc/$1" ] && ! grep -q '^[^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

stop_one() { # name pidfile expected-command-substring
  local name=$1 pf=$2 want=$3 pid sid deadline left
  [ -s "$pf" ] || { echo "$name: no pid file"; return 0; }
  pid=$(tr -d ' \n' <"$pf")
  if ! alive "$pid"; then echo "$name: not running (stale pid $pid)"; rm -f "$pf"; return 0; fi
  # Guard against pid reuse: the process must look like what we started
  # (cmdline substring, or for "cwd:PATH" its working directory; postfix master chdirs to its queue).
  local ok=0
  case $want in
    cwd:*) [ "$(readlink "/proc/$pid/cwd")" = "${want#cwd:}" ] && ok=1 ;;
    *) tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$want" && ok=1 ;;
  esac
  if [ $ok -eq 0 ]; then
    echo "$name: pid $pid is not ours ($(tr '\0' ' ' <"/proc/$pid/cmdline")), skipping" >&2; return 1
  fi
  sid=$(ps -o sid= -p "$pid" | tr -d ' ')
  local t0=${EPOCHREALTIME/./}
  kill -TERM "$pid"
  deadline=$(( $(date +%s) + TIMEOUT ))
  while :; do
    left=$(session_pids "$sid")
    [ -n "$left" ] || break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "$name: killing leftovers: $left" >&2
      for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
      sleep 0.2; break
    fi
    sleep 0.1
  done
  rm -f "$pf"
  echo "$name: stopped (pid $pid) in $(( (${EPOCHREALTIME/./} - t0) / 1000 ))ms"
}

rc=0
stop_one postfix "$DIR/postfix/spool/pid/master.pid" "cwd:$DIR/postfix/spool" || rc=1
stop_one dovecot "$DIR/dovecot/run/master.pid" "dovecot -c $DIR/dovecot/dovecot.conf" || rc=1
exit $rc
