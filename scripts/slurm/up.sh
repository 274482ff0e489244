#!/usr/bin/env bash
# Start pai's test cluster: a real one-node SLURM on this machine (munged, MariaDB + slurmdbd for accounting,
# slurmctld, slurmd), so the `slurm` tests submit jobs through submitit to real daemons. `make slurm-up`.
#
# Idempotent and safe to rerun: a cluster that already answers (started by this script or an earlier copy of
# it) is left as it is, running jobs included, and only checked; daemons that are down are started; packages,
# the munge key and the configuration are created only when missing. Stop it with scripts/slurm/down.sh.
#
# Run as root (it installs Debian packages and starts daemons). Knobs (environment):
#   SLURM_PARTITION=debug      partition name (the default partition)
#   SLURM_CLUSTER_NAME=local   ClusterName
#   SLURM_ACCOUNTING=1         1: MariaDB + slurmdbd, so sacct works (submitit reads job states with it);
#                              0: no accounting (submitit then cannot see a job that died without a result)
#   SLURM_CRED_EXPIRE=10       seconds before a requeued job may start again (Slurm's default: 120)
#   SLURM_MEM_MARGIN_MB=1024   memory kept back from the node
#   SLURM_UP_TIMEOUT=60        seconds to wait for each daemon
#   SLURM_RECONFIGURE=1        rewrite slurm.conf even when the cluster is up (restarts slurmctld + slurmd)
#   SLURM_SKIP_SMOKE=1         skip the closing `srun hostname` (+ sacct) check
# Files: /etc/slurm/{slurm,slurmdbd}.conf, /etc/munge/munge.key, pid files in /run/slurm-local, state in
# /var/spool/slurm{ctld,d} and /var/lib/mysql, logs in /var/log/slurm and /var/log/mysql.
set -euo pipefail

PARTITION="${SLURM_PARTITION:-debug}"
CLUSTER="${SLURM_CLUSTER_NAME:-local}"
ACCOUNTING="${SLURM_ACCOUNTING:-1}"
CRED_EXPIRE="${SLURM_CRED_EXPIRE:-10}"
MEM_MARGIN_MB="${SLURM_MEM_MARGIN_MB:-1024}"
TIMEOUT="${SLURM_UP_TIMEOUT:-60}"

RUN=/run/slurm-local # pid files of the daemons started here; down.sh stops exactly these
LOGS=/var/log/slurm
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
DB_SOCKET=/run/mysqld/mysqld.sock
MARKER="# Written by pai's scripts/slurm/up.sh"
export SLURM_CONF="$CONF"

start=$SECONDS
say() { printf '[slurm-up %3ds] %s\n' "$((SECONDS - start))" "$*"; }
logs() {
  local f
  for f in "$LOGS/slurmctld.log" "$LOGS/slurmd.log" "$LOGS/slurmdbd.log" /var/log/munge/munged.log \
    /var/log/mysql/error.log; do
    [ -f "$f" ] && { printf -- '--- last lines of %s\n' "$f" >&2; tail -n 20 "$f" >&2; }
  done
  return 0
}
fail() { printf '[slurm-up] error: %s\n' "$*" >&2; logs; exit 1; }
trap 'fail "line $LINENO: $BASH_COMMAND exited $?"' ERR

[ "$(id -u)" = 0 ] || fail "run as root (it installs packages and starts daemons)"
mkdir -p "$RUN"
exec 9>"$RUN/up.lock" # one up.sh at a time; daemons are started with 9>&- so they do not hold the lock
flock -w 300 9 || fail "another up.sh holds $RUN/up.lock"

# alive PIDFILE NAME: the pid in PIDFILE is a live (not zombie) process called NAME
alive() {
  local pid
  [ -s "$1" ] || return 1
  pid="$(tr -dc 0-9 <"$1")"
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] &&
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}
# until_ok SECONDS WHAT CMD...: poll CMD once a second
until_ok() {
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  fail "no $what after ${secs}s"
}
controller_up() { command -v scontrol >/dev/null && timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_ready() { sinfo -h -N -o '%T' 2>/dev/null | grep -Eqx 'idle|mixed|allocated|completing'; }

# ---- 1. Debian packages (once)
packages=(munge slurm-wlm slurm-client slurmctld slurmd)
[ "$ACCOUNTING" = 1 ] && packages+=(slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || say "apt-get update failed; installing from the lists at hand"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/pai-slurm-apt.log 2>&1 ||
    fail "apt-get install failed (see /tmp/pai-slurm-apt.log)"
fi
say "slurm $(dpkg-query -W -f='${Version}' slurmctld)"

# ---- 2. configuration (only when no controller answers, or asked to)
node="$(hostname -s)"
write_conf() {
  local hw cpus layout mem real
  # The node as slurmd sees it: "NodeName=x CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1
  # RealMemory=24032"; a job may then ask for any of these CPUs and for the memory less a margin.
  hw="$(slurmd -C 2>/dev/null | head -n 1 || true)"
  cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
  layout="$(grep -o 'CPUs=.*ThreadsPerCore=[0-9]*' <<<"$hw" || true)"
  [ -n "$cpus" ] && [ -n "$layout" ] || { cpus="$(nproc)"; layout="CPUs=$cpus"; }
  mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
  [ -n "$mem" ] || mem=$(($(awk '/^MemTotal/ {print $2}' /proc/meminfo) / 1024))
  real=$((mem - (MEM_MARGIN_MB < mem / 2 ? MEM_MARGIN_MB : mem / 2)))
  local accounting="AccountingStorageType=accounting_storage/none"
  [ "$ACCOUNTING" = 1 ] && accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819"
  if [ -f "$CONF" ] && ! grep -q "^# Written by .*up.sh\|^# Generated by .*up.sh" "$CONF"; then
    cp -p "$CONF" "$CONF.bak.$(date +%s)" # someone's own configuration: keep a copy
  fi
  install -d -m 0755 /etc/slurm "$LOGS" /var/spool/slurmctld /var/spool/slurmd
  cat >"$CONF" <<EOF
$MARKER: a one-node test cluster. Edit the script, not this file.
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# Credential lifetime = how long a requeued job waits before it may run again.
AuthInfo=cred_expire=$CRED_EXPIRE
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# No cgroups in a container: track processes through /proc; CPUs and memory are counted, not enforced.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$accounting
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
# A pass every 5 s, so a requeued job restarts within seconds.
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((real / cpus))
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=120
InactiveLimit=0
KillWait=10
MinJobAge=600
Waittime=0
NodeName=$node NodeAddr=127.0.0.1 $layout RealMemory=$real State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  chmod 0644 "$CONF"
  if [ "$ACCOUNTING" = 1 ]; then
    (umask 077 && cat >"$DBD_CONF" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=$node
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$LOGS/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
# localhost = MariaDB's socket; root logs in through unix_socket authentication, no password.
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    )
  fi
  say "wrote $CONF (node $node: $layout, RealMemory=${real}MB; partition $PARTITION)"
}
if controller_up && [ "${SLURM_RECONFIGURE:-0}" != 1 ]; then
  say "a controller answers: leaving $CONF as it is"
else
  if controller_up; then
    say "SLURM_RECONFIGURE=1: stopping slurmd and slurmctld (jobs are kept)"
    SLURM_DOWN_KEEP_JOBS=1 bash "$(dirname "$0")/down.sh" --slurm-only
  fi
  write_conf
  # slurmctld refuses state saved under another ClusterName
  if [ -s /var/spool/slurmctld/clustername ] && [ "$(cat /var/spool/slurmctld/clustername)" != "$CLUSTER" ]; then
    say "dropping the saved state of cluster $(cat /var/spool/slurmctld/clustername)"
    find /var/spool/slurmctld -mindepth 1 -delete
  fi
fi

# ---- 3. daemons, each only when it is not running
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  say "creating the munge key"
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
munge_ok() { munge -n </dev/null | unmunge >/dev/null; }
if munge_ok 2>/dev/null; then
  say "munged is running"
  # started by apt's init script? then it is ours to stop too
  [ -s "$RUN/munged.pid" ] || [ ! -s /run/munge/munged.pid ] || cp /run/munge/munged.pid "$RUN/munged.pid"
else
  say "starting munged"
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged --force 9>&-
  until_ok 15 "answer from munged" munge_ok
  cp /run/munge/munged.pid "$RUN/munged.pid"
fi

if [ "$ACCOUNTING" = 1 ]; then
  db_ok() { mariadb-admin --socket="$DB_SOCKET" ping; }
  if db_ok >/dev/null 2>&1; then
    say "MariaDB is running"
    [ -s "$RUN/mariadbd.pid" ] || [ ! -s /run/mysqld/mysqld.pid ] || cp /run/mysqld/mysqld.pid "$RUN/mariadbd.pid"
  else
    say "starting MariaDB"
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    install -d -o mysql -g adm -m 2750 /var/log/mysql
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/tmp/pai-slurm-db.log 2>&1 ||
      fail "mariadb-install-db failed (see /tmp/pai-slurm-db.log)"
    rm -f /run/mysqld/mysqld.pid
    setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket="$DB_SOCKET" --skip-networking \
      --pid-file=/run/mysqld/mysqld.pid --log-error=/var/log/mysql/error.log </dev/null >/dev/null 2>&1 9>&- &
    until_ok "$TIMEOUT" "answer from MariaDB" db_ok
    cp /run/mysqld/mysqld.pid "$RUN/mariadbd.pid"
  fi
  if alive "$RUN/slurmdbd.pid" slurmdbd; then
    say "slurmdbd is running"
  else
    say "starting slurmdbd"
    slurmdbd 9>&-
  fi
  until_ok "$TIMEOUT" "answer from slurmdbd" sacctmgr -n show cluster
  sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

if alive "$RUN/slurmctld.pid" slurmctld || controller_up; then
  say "slurmctld is running"
else
  say "starting slurmctld"
  slurmctld 9>&-
fi
until_ok "$TIMEOUT" "answer from slurmctld (scontrol ping)" controller_up
if alive "$RUN/slurmd.pid" slurmd; then
  say "slurmd is running"
else
  say "starting slurmd"
  slurmd -N "$node" 9>&-
fi

# ---- 4. the node takes jobs (a node left drained by an earlier session is resumed once)
for ((i = 0; i < TIMEOUT; i++)); do
  node_ready && break
  if [ "$i" = 5 ] && sinfo -h -N -o '%T' | grep -Eq '^(drain|down)'; then
    say "node is $(sinfo -h -N -o '%T'): resuming it"
    scontrol update NodeName="$node" State=RESUME || true
  fi
  sleep 1
done
node_ready || { sinfo -N -l >&2; sinfo -R >&2; fail "node $node does not take jobs"; }

# ---- 5. a job runs (and accounting sees it)
if [ "${SLURM_SKIP_SMOKE:-0}" != 1 ]; then
  # shellcheck disable=SC2016  # expanded inside the job
  out="$(timeout "$((TIMEOUT + 30))" srun -N1 -n1 -t 1 -J pai-slurm-up sh -c 'echo "$SLURM_JOB_ID"' 2>&1)" ||
    fail "srun failed: $out"
  job="$(grep -Eo '^[0-9]+$' <<<"$out" | tail -n 1)" # srun may add warnings (e.g. mpi/pmix) around it
  [ -n "$job" ] || fail "srun printed no job id: $out"
  if [ "$ACCOUNTING" = 1 ]; then
    for ((i = 0; i < 15; i++)); do
      sacct -n -X -P -j "$job" -o State 2>/dev/null | grep -q COMPLETED && break
      sleep 1
    done
    sacct -n -X -P -j "$job" -o State | grep -q COMPLETED || fail "sacct does not show job $job as COMPLETED"
  fi
  say "job $job ran$([ "$ACCOUNTING" = 1 ] && echo ' and sacct shows it')"
fi
say "SLURM is up: partition $PARTITION on $node; stop it with scripts/slurm/down.sh (make slurm-down)"
sinfo
