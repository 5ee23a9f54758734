# Shared by prolog.sh and epilog.sh: one joulemeter daemon per node while jobs run there.
#
# The prolog counts the job in (a file per job under JOULEMETER_RUN_DIR/jobs) and starts a daemon if none
# answers; the epilog counts it out and stops the daemon when the last job has left, but only a daemon a
# prolog started (marked in JOULEMETER_RUN_DIR/started): a node-wide systemd unit or an admin's daemon is
# left alone. Everything runs under one lock, so jobs starting and ending together do not race.
#
# A prolog or epilog that fails drains the node, and measurement must never cost a node: both always exit
# 0 and report problems to syslog (tag joulemeter-slurm).
#
# Site settings come from JOULEMETER_ENV_FILE (default /etc/joulemeter/slurm.env), e.g.
#   TELEMETRY_DB=postgresql+psycopg://joulemeter@db.cluster/joulemeter
#   JOULEMETER_LAUNCH=systemd          # systemd (the joulemeter.service unit) | direct (a process of our own)
#   JOULEMETER_USER=joulemeter         # direct mode: the unprivileged user the daemon runs as

jm_env_file="${JOULEMETER_ENV_FILE:-/etc/joulemeter/slurm.env}"
if [[ -r "$jm_env_file" ]]; then
    set -a
    # shellcheck disable=SC1090
    . "$jm_env_file"
    set +a
fi
: "${TELEMETRY_PORT:=8765}"
: "${JOULEMETER_RUN_DIR:=/run/joulemeter}"
: "${JOULEMETER_UNIT:=joulemeter.service}"
: "${JOULEMETER_DAEMON:=/opt/joulemeter/bin/telemetry-service}"
: "${JOULEMETER_LOG:=/var/log/joulemeter/daemon.log}"
: "${JOULEMETER_USER:=}"
: "${JOULEMETER_TIMEOUT:=30}"
if [[ -z "${JOULEMETER_LAUNCH:-}" ]]; then
    if command -v systemctl >/dev/null 2>&1 && systemctl cat "$JOULEMETER_UNIT" >/dev/null 2>&1; then
        JOULEMETER_LAUNCH=systemd
    else
        JOULEMETER_LAUNCH=direct
    fi
fi
export TELEMETRY_PORT

jm_jobs="$JOULEMETER_RUN_DIR/jobs"
jm_started="$JOULEMETER_RUN_DIR/started"

jm_say() {
    if command -v logger >/dev/null 2>&1; then
        logger -t joulemeter-slurm -- "job ${SLURM_JOB_ID:-?}: $*"
    fi
    echo "joulemeter-slurm: job ${SLURM_JOB_ID:-?}: $*" >&2
}

jm_answers() {
    local url="http://127.0.0.1:${TELEMETRY_PORT}/healthz"
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null
    else
        python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null
    fi
}

jm_lock() {
    mkdir -p "$jm_jobs" || return 1
    exec 9>"$JOULEMETER_RUN_DIR/lock"
    flock -w "$JOULEMETER_TIMEOUT" 9
}

jm_wait_answers() {
    local deadline=$((SECONDS + JOULEMETER_TIMEOUT))
    until jm_answers; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

jm_start() {
    if [[ "$JOULEMETER_LAUNCH" == systemd ]]; then
        systemctl start "$JOULEMETER_UNIT" || return 1
        echo systemd >"$jm_started"
    else
        mkdir -p "$(dirname "$JOULEMETER_LOG")"
        local as_user=()
        if [[ -n "$JOULEMETER_USER" && $EUID -eq 0 ]]; then
            chown "$JOULEMETER_USER" "$(dirname "$JOULEMETER_LOG")"
            # setpriv execs the daemon (su or runuser would stay between, and SIGKILL it 2 s after SIGTERM)
            as_user=(setpriv "--reuid=$JOULEMETER_USER" "--regid=$(id -g "$JOULEMETER_USER")" --init-groups
                     env "HOME=$(getent passwd "$JOULEMETER_USER" | cut -d: -f6)")
        fi
        # Its own session, so that the end of this prolog (and of the job's processes) does not end it.
        # shellcheck disable=SC2086  # JOULEMETER_DAEMON may be a command with arguments
        # fd 9 is the lock: the daemon must not hold it.
        setsid "${as_user[@]}" $JOULEMETER_DAEMON serve --port "$TELEMETRY_PORT" >>"$JOULEMETER_LOG" 2>&1 </dev/null 9>&- &
        echo "$!" >"$jm_started"
    fi
    jm_wait_answers
}

jm_stop() {
    local how
    how=$(cat "$jm_started" 2>/dev/null) || return 0
    if [[ "$how" == systemd ]]; then
        systemctl stop "$JOULEMETER_UNIT"  # the unit's KillSignal is SIGTERM: the daemon flushes
    elif [[ "$how" =~ ^[0-9]+$ ]] && kill -0 "$how" 2>/dev/null; then
        kill -TERM "$how"
        local deadline=$((SECONDS + JOULEMETER_TIMEOUT))
        while kill -0 "$how" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                jm_say "daemon $how did not stop within ${JOULEMETER_TIMEOUT} s after SIGTERM; killing it"
                kill -KILL "$how"
                break
            fi
            sleep 0.2
        done
    fi
    rm -f "$jm_started"
}
