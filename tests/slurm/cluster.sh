#!/bin/bash
# A private single-node Slurm cluster (munged, slurmctld, slurmd) under a directory of its own, for
# the Slurm tests (tests/slurm/slurm_jobs.sh), with its own munge socket and key, its own ports and
# its own SLURM_CONF; nothing under /etc is changed.
#
#   cluster.sh check         exit 0 if a cluster can be started here, else print why and exit 77
#   cluster.sh up DIR        install slurm-wlm and munge if missing, start the daemons, wait until
#                            the node is idle; DIR/env.sh then sets SLURM_CONF for sinfo/sbatch/...
#   cluster.sh down DIR      cancel every job, stop every daemon `up` started, by its pid
#
# The node declares RESAE_SLURM_CPUS CPUs (default 8, more than a small machine has:
# SlurmdParameters=config_overrides) so that the tests' 2-rank jobs run side by side. Needs root
# (slurmd runs jobs as their users) and, where the packages are missing, apt-get.
set -uo pipefail
cmd=${1:-}
dir=${2:-}
pkgs=(slurm-wlm slurmctld slurmd slurm-client munge)

say() { echo "cluster.sh: $*"; }

missing_pkgs() {
  local p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

# why a cluster cannot be started here (empty: it can)
why_not() {
  [ "$(id -u)" = 0 ] || { echo "not root (slurmd must run as root to start jobs)"; return; }
  command -v dpkg-query >/dev/null || { echo "no dpkg (the Slurm tests install Debian's slurm-wlm and munge)"; return; }
  if [ -n "$(missing_pkgs)" ] && ! command -v apt-get >/dev/null; then
    echo "slurm-wlm/munge are missing and apt-get is not available"
  fi
}

install_pkgs() {
  local m
  mapfile -t m < <(missing_pkgs)
  [ ${#m[@]} = 0 ] && return 0
  say "installing ${m[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # the packages' postinst cannot start the daemons here ("policy-rc.d denied"): harmless
  { apt-get update -q && apt-get install -y -q "${m[@]}"; } >"$dir/log/apt.log" 2>&1 ||
    { tail -20 "$dir/log/apt.log"; say "apt-get install ${m[*]} failed (log: $dir/log/apt.log)"; return 1; }
  [ -z "$(missing_pkgs)" ] || { say "still missing after apt-get: $(missing_pkgs | tr '\n' ' ')"; return 1; }
}

# a TCP port nobody listens on, from 20000..59999
free_port() {
  local p used
  used=$(ss -Htln 2>/dev/null | awk '{print $4}' | sed 's/.*://')
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    grep -qx "$p" <<<"$used" || [ "$p" = "${1:-}" ] || { echo "$p"; return; }
  done
  return 1
}

stop_pid() { # PIDFILE
  [ -s "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  return 0
}

up() {
  [ -n "$dir" ] || { say "usage: cluster.sh up DIR"; exit 2; }
  local why
  why=$(why_not)
  [ -z "$why" ] || { say "cannot start a cluster: $why"; exit 77; }
  mkdir -p "$dir/log" "$dir/etc" "$dir/state" "$dir/spool" "$dir/run"
  dir=$(cd "$dir" && pwd)
  chmod 0755 "$dir" "$dir/run"
  install_pkgs || exit 1
  # munge with a key and a socket of its own (munged wants every directory above its socket
  # searchable by all, and its key readable by its user only)
  mkdir -p "$dir/munge" && chmod 0700 "$dir/munge"
  [ -s "$dir/munge/munge.key" ] || mungekey --create --keyfile="$dir/munge/munge.key" --force >/dev/null 2>&1 ||
    { say "mungekey failed"; exit 1; }
  local sock=$dir/run/munge.sock
  munged --socket="$sock" --key-file="$dir/munge/munge.key" --pid-file="$dir/run/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" ||
    { tail -5 "$dir/log/munged.log"; say "munged did not start (log: $dir/log/munged.log)"; exit 1; }
  local ok=0
  for _ in $(seq 50); do
    munge -S "$sock" -n 2>/dev/null | unmunge -S "$sock" >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.1
  done
  [ $ok = 1 ] || { say "munged does not answer on $sock"; exit 1; }

  local host node mem cpus=${RESAE_SLURM_CPUS:-8} p1 p2
  host=$(hostname -s)
  node=$(slurmd -C | head -1)
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  p1=$(free_port) || { say "no free TCP port found"; exit 1; }
  p2=$(free_port "$p1") || { say "no free TCP port found"; exit 1; }
  mkdir -p "$dir/spool/slurmd.$host"
  cat >"$dir/etc/slurm.conf" <<CONF
# written by tests/slurm/cluster.sh
ClusterName=resaetest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job becomes eligible cred_expire + 1 s after its requeue (default 121 s)
AuthInfo=socket=$sock,cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd.%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=$p1
SlurmdPort=$p2
NodeName=$host NodeAddr=localhost CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$((mem * 90 / 100)) State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=30 State=UP OverSubscribe=NO
CONF
  echo "export SLURM_CONF=$dir/etc/slurm.conf" >"$dir/env.sh"
  export SLURM_CONF=$dir/etc/slurm.conf
  slurmctld || { tail -20 "$dir/log/slurmctld.log"; say "slurmctld did not start"; exit 1; }
  slurmd || { tail -20 "$dir/log/slurmd.log"; say "slurmd did not start"; exit 1; }
  local st=
  for _ in $(seq 60); do
    st=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    [ "$st" = idle ] && break
    sleep 0.5
  done
  [ "$st" = idle ] || { tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log"; say "node $host is '$st', not idle (logs: $dir/log)"; exit 1; }
  say "cluster up: node $host idle, $cpus CPUs, ports $p1/$p2; source $dir/env.sh"
}

down() {
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  export SLURM_CONF=$dir/etc/slurm.conf
  if [ -s "$dir/run/slurmctld.pid" ] && kill -0 "$(cat "$dir/run/slurmctld.pid")" 2>/dev/null; then
    scancel --user="$(id -un)" >/dev/null 2>&1
    for _ in $(seq 30); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  stop_pid "$dir/run/slurmd.pid"
  stop_pid "$dir/run/slurmctld.pid"
  stop_pid "$dir/run/munged.pid"
  # a step's slurmstepd outlives slurmd only while it ends its tasks
  pkill -KILL -f "slurmstepd.*$dir" 2>/dev/null
  say "cluster down ($dir)"
}

case $cmd in
check)
  why=$(why_not)
  [ -z "$why" ] || { echo "cannot start a Slurm cluster here: $why"; exit 77; }
  ;;
up) up ;;
down) down ;;
*) echo "usage: cluster.sh check | up DIR | down DIR" >&2; exit 2 ;;
esac
