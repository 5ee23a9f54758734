#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/test_slurm_real.py: Debian's slurm-wlm and munge,
# slurmctld and slurmd as root on localhost. Plugins need no cgroups (select/cons_tres, proctrack/linuxproc,
# task/none), so it runs in a container. Idempotent: installs only what is missing, writes slurm.conf only
# if absent or ours, starts only daemons that are not running, and returns once the node takes jobs.
#
#   sudo scripts/slurm-localhost.sh          # then: sinfo; sbatch ...
#
# Settings: SLURM_LOCALHOST_MAXTIME (the partition's MaxTime in minutes, default 10),
# SLURM_LOCALHOST_TIMEOUT (seconds to wait for the node, default 60).
set -euo pipefail

maxtime="${SLURM_LOCALHOST_MAXTIME:-10}"
timeout="${SLURM_LOCALHOST_TIMEOUT:-60}"
conf=/etc/slurm/slurm.conf
marker="# joulemeter localhost cluster (scripts/slurm-localhost.sh)"

die() { echo "slurm-localhost: $*" >&2; exit 1; }
say() { echo "slurm-localhost: $*" >&2; }

[[ $EUID -eq 0 ]] || die "needs root (slurmd runs jobs as their users, and the packages install system-wide)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null ||
    ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    # A stale package index is the usual reason an install fails; refresh it once and retry.
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; } ||
        die "could not install slurm-wlm and munge with apt-get"
fi

# munge authenticates every Slurm message; the key must exist and belong to munge before munged starts.
if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating the munge key"
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- munged
    munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
fi

host="$(hostname -s)"
if [[ -e "$conf" ]] && ! grep -qxF "$marker" "$conf"; then
    die "$conf exists and is not ours; refusing to replace a real cluster's configuration"
fi
# slurmd -C reports the node as slurmd sees it (CPUs, topology, memory): a node declared bigger would drain.
node="$(slurmd -C | head -n 1)"
[[ "$node" == NodeName=* ]] || die "slurmd -C did not describe this node: $node"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
new_conf="$(cat <<EOF
$marker
ClusterName=localhost
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups: a container has no delegated cgroup tree for slurmd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
# CPUs only: memory is not a consumable, so jobs that ask for no memory still share the node.
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to scontrol for 5 minutes (there is no accounting database for sacct).
MinJobAge=300
# Seconds between SIGTERM and SIGKILL when a job is cancelled or reaches its time limit.
KillWait=10
${node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=${maxtime} State=UP
EOF
)"
restart=""
if [[ ! -e "$conf" ]] || [[ "$(cat "$conf")" != "$new_conf" ]]; then
    printf '%s\n' "$new_conf" >"$conf"
    restart=1
fi

running() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running /run/slurmctld.pid && [[ -n "$restart" ]]; then
    scontrol reconfigure || die "slurmctld did not take the new $conf"
fi
if ! running /run/slurmctld.pid; then
    say "starting slurmctld"
    slurmctld || die "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
fi
if ! running /run/slurmd.pid; then
    say "starting slurmd"
    slurmd || die "slurmd did not start (see /var/log/slurm/slurmd.log)"
fi

deadline=$((SECONDS + timeout))
while :; do
    state="$(sinfo -h -N -n "$host" -o %t 2>/dev/null || true)"
    case "$state" in
        idle | mix | alloc) break ;;
        down* | drain* | drng*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    if ((SECONDS >= deadline)); then
        tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
        die "node $host is '${state:-unknown}' after ${timeout} s, not ready for jobs"
    fi
    sleep 1
done
say "node $host is $state (partition debug, MaxTime ${maxtime} min)"
