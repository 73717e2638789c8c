#!/usr/bin/env bash
# Stop the daemons that start_cluster.sh started (by their pid files in STATE_DIR).
set -uo pipefail
STATE=${1:?usage: stop_cluster.sh STATE_DIR}
for name in slurmd slurmctld munged; do
  pidfile="$STATE/$name.pid"
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  rm -f "$pidfile"
done
# remove the link to our config that start_cluster.sh made (only if it still points to this cluster)
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$STATE/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
