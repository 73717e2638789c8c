#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, loopback only, for tests/test_slurm.py.
#
#   tests/slurm/start_cluster.sh STATE_DIR     prints "export SLURM_CONF=..." on success
#   tests/slurm/stop_cluster.sh STATE_DIR      stops the daemons this script started
#
# Installs Debian's slurm-wlm and munge when missing and HRV_SLURM_INSTALL=1 or CI=true (needs root and apt). No accounting database,
# no cgroups (proctrack/linuxproc, task/none); two fake GPUs (GRES backed by plain files) so that
# GPU requests (--gpus=1) are scheduled like on a real GPU node. Completed jobs are recorded by
# jobcomp/filetxt in STATE_DIR/jobcomp.log (the job history that the test reads).
# Exit codes: 0 started, 3 cannot start here (reason on stderr: the test skips), other = bug.
set -euo pipefail

STATE=${1:?usage: start_cluster.sh STATE_DIR}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
CTLD_PORT=${HRV_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${HRV_SLURMD_PORT:-6818}

cannot() { echo "cannot start SLURM: $*" >&2; exit 3; }

[ "$(id -u)" = 0 ] || cannot "not root (the daemons and munge need root)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  # CI (CI=true, as root on a throwaway machine) may install them; elsewhere only when asked
  [ "${HRV_SLURM_INSTALL:-0}" = 1 ] || [ "${CI:-}" = true ] \
    || cannot "slurm-wlm/munge not installed (HRV_SLURM_INSTALL=1 lets this script apt-get install them)"
  command -v apt-get >/dev/null || cannot "slurm-wlm is not installed and there is no apt-get"
  echo "installing slurm-wlm and munge with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$STATE/apt.log" 2>&1 || cannot "apt-get update failed (see $STATE/apt.log)"
  apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$STATE/apt.log" 2>&1 \
    || cannot "apt-get install slurm-wlm munge failed (see $STATE/apt.log)"
fi

# munge: SLURM's authentication. Reuse a running munged, else start one as the munge user.
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || cannot "no munge key"; }
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- munged >"$STATE/munged.out" 2>&1 || cannot "munged failed: $(cat "$STATE/munged.out")"
  else
    munged --force >"$STATE/munged.out" 2>&1 || cannot "munged failed: $(cat "$STATE/munged.out")"
  fi
  pgrep -n -x munged >"$STATE/munged.pid" || true
  for _ in $(seq 20); do (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.5; done
  (munge -n | unmunge) >/dev/null 2>&1 || cannot "munge does not authenticate"
fi

CPUS=$(nproc)
MEM=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
mkdir -p "$STATE/spool/localhost" "$STATE/state"
cat >"$STATE/slurm.conf" <<EOF
ClusterName=hrvtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool/localhost
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
# squeue must still list finished jobs when the executor asks (the plugin wants >= 120 s)
MinJobAge=600
ReturnToService=2
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
# SLURM drops file-less GPUs: plain files stand in for /dev/nvidia0 and /dev/nvidia1
mkdir -p "$STATE/dev" && touch "$STATE/dev/nvidia0" "$STATE/dev/nvidia1"
cat >"$STATE/gres.conf" <<EOF
NodeName=localhost Name=gpu File=$STATE/dev/nvidia[0-1]
EOF

export SLURM_CONF=$STATE/slurm.conf
# The executor's job step drops SLURM_CONF before its nested srun, so srun must find the config at
# the compiled-in default path: link it there, unless a real SLURM config occupies that path.
SYS_CONF=/etc/slurm/slurm.conf
if [ -e "$SYS_CONF" ] && [ ! -L "$SYS_CONF" ]; then
  cannot "$SYS_CONF exists (a real SLURM installation?); not replacing it"
fi
mkdir -p /etc/slurm
ln -sfn "$SLURM_CONF" "$SYS_CONF"
slurmctld -f "$SLURM_CONF" >"$STATE/slurmctld.out" 2>&1 || cannot "slurmctld failed: $(tail -5 "$STATE/slurmctld.out" "$STATE/slurmctld.log" 2>/dev/null)"
slurmd -f "$SLURM_CONF" -N localhost >"$STATE/slurmd.out" 2>&1 || cannot "slurmd failed: $(tail -5 "$STATE/slurmd.out" "$STATE/slurmd.log" 2>/dev/null)"

for _ in $(seq 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
  case "$state" in idle|mix|alloc) break ;; esac
  sleep 0.5
done
case "${state:-}" in
  idle|mix|alloc) ;;
  *) cannot "node did not come up (state '${state:-none}'): $(tail -5 "$STATE/slurmctld.log" "$STATE/slurmd.log" 2>/dev/null)" ;;
esac
echo "export SLURM_CONF=$SLURM_CONF"
