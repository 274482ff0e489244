#!/usr/bin/env bash
# Stop pai's test cluster (scripts/slurm/up.sh; `make slurm-down`): cancel the jobs still queued or running
# (SLURM_DOWN_KEEP_JOBS=1 keeps them), then stop slurmd, slurmctld, slurmdbd, MariaDB and munged — only the
# daemons whose pid up.sh recorded in /run/slurm-local, and only while that pid is still a process of that name
# (no pkill/killall). SIGTERM, SIGKILL after 30 s. Idempotent: with nothing running it says so and exits 0.
# Logs and state (job ids, accounting database) are kept. Run as root.
#   --slurm-only   stop slurmd and slurmctld only (up.sh uses it to apply a new slurm.conf)
set -euo pipefail

RUN=/run/slurm-local
export SLURM_CONF=/etc/slurm/slurm.conf
say() { printf '[slurm-down] %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { say "error: run as root" >&2; exit 1; }

# pid_of PIDFILE NAME: print the pid in PIDFILE if it is a live (not zombie) process called NAME
pid_of() {
  local pid
  [ -s "$1" ] || return 1
  pid="$(tr -dc 0-9 <"$1")"
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] &&
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && echo "$pid"
}
running() { [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

stop() { # NAME: the daemon whose pid file is $RUN/NAME.pid
  local name=$1 pid i
  if ! pid="$(pid_of "$RUN/$name.pid" "$name")"; then
    say "$name is not running"
    rm -f "$RUN/$name.pid"
    return 0
  fi
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do
    running "$pid" || break
    sleep 1
  done
  if running "$pid"; then
    say "$name ignored SIGTERM for 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
}

# Jobs first, while the controller can still end them cleanly (no job process outlives the daemons).
if [ "${SLURM_DOWN_KEEP_JOBS:-0}" != 1 ] && pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null &&
  timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; then
  jobs="$(timeout 10 squeue -h -o '%A' 2>/dev/null | tr '\n' ' ' || true)"
  if [ -n "${jobs// /}" ]; then
    say "cancelling jobs: $jobs"
    # shellcheck disable=SC2086  # one argument per job id
    timeout 20 scancel $jobs || true
    for ((i = 0; i < 45; i++)); do
      [ -z "$(timeout 10 squeue -h -o '%A' 2>/dev/null || true)" ] && break
      sleep 1
    done
  fi
fi

stop slurmd
stop slurmctld
if [ "${1:-}" != --slurm-only ]; then
  stop slurmdbd
  stop mariadbd
  stop munged
fi
say "done"
