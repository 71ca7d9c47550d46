#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for the test suite: Debian's slurm-wlm + munge.
# Needs root (or sudo) and apt-get. Safe to rerun: a cluster that answers is left as it is.
# Prints "slurm ready: partition debug on <host>" and exits 0, or prints why and exits 1.
# Stop it with: bash scripts/start-test-slurm.sh --stop
#
# Settings that keep the tests short: KillWait=5 (a cancelled or requeued job is killed
# 5 s after its SIGTERM, not 30 s), JobRequeue=1 (every job may be requeued), a
# scheduler pass every second, and at least 4 CPUs declared (config_overrides) so that
# four one-CPU test jobs start together even on a 2-core machine; memory likewise (mem).
set -euo pipefail
STATE=${RESEXP_SLURM_STATE:-/tmp/resexp-slurm}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

if [ "${1:-}" = "--stop" ]; then
  for daemon in slurmd slurmctld; do
    [ -s "$STATE/$daemon.pid" ] && $SUDO kill "$(cat "$STATE/$daemon.pid")" 2>/dev/null || true
  done
  exit 0
fi

up() { timeout 10 sinfo -h -o %a 2>/dev/null | grep -q up; }
already_up() {
  echo "slurm ready: partition $(sinfo -h -o %P | head -1 | tr -d '*') on $(hostname) (already running)"
  exit 0
}
command -v sinfo >/dev/null && up && already_up  # the usual case: no lock, no wait
# One start at a time: the suite's workers may each call this at once (the second waits, then
# finds the cluster up). Apt likewise waits for another apt-get rather than failing. The
# daemons started below must not inherit the lock's descriptor (9>&-): a daemon holding it
# would hold the lock for as long as it lives, and every later start would wait forever.
LOCK=/tmp/resexp-slurm-start.lock
exec 9>"$LOCK"
if ! flock -w 420 9; then
  echo "another start of the test cluster has held $LOCK for 7 minutes; holders:" \
    "$(for p in /proc/[0-9]*; do ls -l "$p/fd" 2>/dev/null | grep -q "$LOCK" && tr '\0' ' ' < "$p/cmdline"; done)"
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  APT=($SUDO apt-get -o DPkg::Lock::Timeout=300)
  { "${APT[@]}" install -y -qq slurm-wlm munge >/dev/null 2>&1 \
    || { "${APT[@]}" update -qq && "${APT[@]}" install -y -qq slurm-wlm munge >/dev/null; }; } \
    || { echo "cannot install slurm-wlm and munge with apt-get"; exit 1; }
fi
up && already_up  # started by another call while this one waited for the lock

$SUDO mkdir -p "$STATE"/{spool,state,log} /etc/slurm /run/munge /var/log/munge /var/lib/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
  $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
$SUDO chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
$SUDO chmod 400 /etc/munge/munge.key
munge -n >/dev/null 2>&1 || $SUDO runuser -u munge -- /usr/sbin/munged --force 9>&-

host=$(hostname -s); cpus=$(( $(nproc) > 4 ? $(nproc) : 4 )); mem=$(awk '/^MemTotal/{print int($2 / 1024 * 3 / 4)}' /proc/meminfo)
# At least 64 GB declared, so that jobs asking for the shipped launcher.mem_gb (16) start
# on a small machine too; with CR_Core memory is not a consumable, so nothing is overcommitted.
mem=$(( mem > 65536 ? mem : 65536 ))
$SUDO tee /etc/slurm/slurm.conf >/dev/null <<CONF
ClusterName=resexp-test
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# -c: a clean start (no jobs left over from an earlier cluster in this state folder)
$SUDO /usr/sbin/slurmctld -c 9>&-
$SUDO /usr/sbin/slurmd 9>&-
for _ in $(seq 30); do
  sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' && break
  sleep 0.5
done
sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' \
  || { echo "slurm did not come up; see $STATE/log"; exit 1; }
echo "slurm ready: partition debug on $host"
