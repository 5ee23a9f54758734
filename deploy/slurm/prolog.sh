#!/bin/bash
# Slurm Prolog (slurm.conf: Prolog=/etc/slurm/joulemeter/prolog.sh, with epilog.sh as Epilog and
# joulemeter-node-lib.sh beside them): a joulemeter daemon on this node for as long as jobs run here.
# slurmd runs it as root on every allocated node before the job starts. See joulemeter-node-lib.sh.
# shellcheck source=joulemeter-node-lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/joulemeter-node-lib.sh"

if ! jm_lock; then
    jm_say "could not take the lock in $JOULEMETER_RUN_DIR; not starting a daemon"
    exit 0
fi
touch "$jm_jobs/${SLURM_JOB_ID:-unknown}"
if jm_answers; then
    exit 0  # ours from an earlier job, or a node-wide daemon: either way, this job is measured
fi
if [[ -e "$jm_started" ]]; then
    jm_say "the daemon a prolog started no longer answers; starting another"
    rm -f "$jm_started"
fi
if ! jm_start; then
    jm_say "the daemon did not come up on port $TELEMETRY_PORT (log: $JOULEMETER_LOG); the job runs unmeasured"
fi
exit 0
