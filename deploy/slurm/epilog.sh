#!/bin/bash
# Slurm Epilog, the pair of prolog.sh: counts the job out and, when no job is left on the node, stops the
# daemon a prolog started (SIGTERM: it writes every sample read so far first). See joulemeter-node-lib.sh.
# shellcheck source=joulemeter-node-lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/joulemeter-node-lib.sh"

if ! jm_lock; then
    jm_say "could not take the lock in $JOULEMETER_RUN_DIR; leaving the daemon running"
    exit 0
fi
rm -f "$jm_jobs/${SLURM_JOB_ID:-unknown}"
if [[ -n "$(ls -A "$jm_jobs" 2>/dev/null)" ]]; then
    exit 0  # other jobs still run here
fi
jm_stop
exit 0
