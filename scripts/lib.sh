# shellcheck shell=bash
# Shared bash for scripts/* and .ci/run. Sourced, never executed:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Defines: GROWTH_REPO, GROWTH_PROG; say, warn, die; ensure_venv (the Python tools);
# port helpers; process helpers (pid files, stop with TERM then KILL); wait_for_http.

GROWTH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GROWTH_PROG=${GROWTH_PROG:-$(basename "$0")}
GROWTH_REQUIREMENTS=$GROWTH_REPO/scripts/requirements.txt

# --- messages: all on stderr, so stdout stays for results (query output, ports, URLs).

say() { printf '%s: %s\n' "$GROWTH_PROG" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$GROWTH_PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$GROWTH_PROG" "$*" >&2
    exit 1
}

# require_command NAME HINT: fail with HINT unless NAME is on PATH.
require_command() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH. $2"
}

# --- the Python virtual environment (chDB for the embedded ClickHouse, OTel SDK for tests)

# venv_dir: where the project's venv lives (GROWTH_VENV overrides $REPO/.venv).
venv_dir() { printf '%s\n' "${GROWTH_VENV:-$GROWTH_REPO/.venv}"; }

requirements_hash() { sha256sum "$GROWTH_REQUIREMENTS" | cut -d' ' -f1; }

# venv_is_current: true when the venv exists, its python runs, and it was installed from
# the current requirements.txt (the stamp holds the file's hash).
venv_is_current() {
    local venv stamp
    venv=$(venv_dir)
    stamp=$venv/.growth-requirements.sha256
    [[ -x $venv/bin/python && -f $stamp ]] || return 1
    [[ $(<"$stamp") == "$(requirements_hash)" ]] || return 1
    "$venv/bin/python" -c '' 2>/dev/null
}

# as_root CMD...: run CMD as root (directly, or with sudo when that needs no password).
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root to run: $* (or install it beforehand)"
    fi
}

# apt_install PKG...: install Debian packages as root, after an index update.
apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# ensure_browser_tools: what the browser test (tests/browser) needs. Debian's Chromium
# (/usr/bin/chromium) is installed with apt when missing and GROWTH_TEST_CHROMIUM names no
# other; playwright-core comes with `npm ci` from the committed package-lock.json when
# missing or when the lock changed (a copy of the lock in node_modules is the stamp).
ensure_browser_tools() {
    local dir=$GROWTH_REPO/tests/browser
    if [[ -z ${GROWTH_TEST_CHROMIUM:-} && ! -x /usr/bin/chromium ]]; then
        say "installing Debian's chromium for the browser test (apt)"
        # A subshell: without root the test fails later and says why; the rest still runs.
        (apt_install chromium) ||
            warn "could not install chromium: the browser test will fail (apt-get install chromium)"
    fi
    require_command node "The browser test needs Node.js (Debian: apt-get install nodejs npm)."
    require_command npm "The browser test needs npm (Debian: apt-get install npm)."
    if cmp -s "$dir/package-lock.json" "$dir/node_modules/.growth-package-lock.json"; then
        return 0
    fi
    say "installing the browser test's packages (npm ci in tests/browser)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) ||
        die "npm ci in tests/browser failed"
    cp "$dir/package-lock.json" "$dir/node_modules/.growth-package-lock.json"
}

# ensure_venv: create the venv and install scripts/requirements.txt when it is missing or
# the requirements changed; reuse it otherwise. Sets GROWTH_VENV_PYTHON. Safe to call from
# several scripts at once (they serialize on a lock file in $TMPDIR).
ensure_venv() {
    local venv base_python lock_fd
    venv=$(venv_dir)
    # shellcheck disable=SC2034 # read by the scripts that source this file
    GROWTH_VENV_PYTHON=$venv/bin/python
    venv_is_current && return 0

    # The lock lives outside the venv, which `venv --clear` may wipe.
    exec {lock_fd}>"${TMPDIR:-/tmp}/growth-venv-$(printf '%s' "$venv" | sha256sum | cut -c1-16).lock"
    flock "$lock_fd"
    if venv_is_current; then # another script finished it while we waited
        exec {lock_fd}>&-
        return 0
    fi

    base_python=${GROWTH_PYTHON:-python3}
    require_command "$base_python" "Install Python 3.11 or newer (Debian: apt-get install python3 python3-venv)."
    "$base_python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$base_python is $("$base_python" -V 2>&1); the pinned packages need Python >= 3.11 (set GROWTH_PYTHON to another interpreter)."

    if ! "$venv/bin/python" -c '' 2>/dev/null; then
        # --clear below wipes the directory: never do that to something that is not a venv.
        if [[ -d $venv && ! -f $venv/pyvenv.cfg ]] && [[ -n $(ls -A "$venv") ]]; then
            die "$venv exists and is not a Python venv; point GROWTH_VENV elsewhere or remove it"
        fi
        say "creating Python venv in $venv"
        "$base_python" -m venv --clear "$venv" ||
            die "'$base_python -m venv' failed. On Debian/Ubuntu install the venv module: apt-get install python3-venv"
    fi
    if [[ -f $venv/.growth-requirements.sha256 ]]; then
        say "scripts/requirements.txt changed: updating $venv"
    else
        say "installing scripts/requirements.txt into $venv (about 900 MB installed, once; later runs reuse it)"
    fi
    PIP_NO_INPUT=1 "$venv/bin/python" -m pip install --disable-pip-version-check --quiet \
        --requirement "$GROWTH_REQUIREMENTS" ||
        die "pip install of $GROWTH_REQUIREMENTS failed (see the pip output above)"
    "$venv/bin/python" -c 'import chdb' || die "chdb does not import in $venv after installing"
    requirements_hash >"$venv/.growth-requirements.sha256"
    exec {lock_fd}>&-
    say "venv ready: $venv"
}

# --- ports

# port_in_use PORT: true when something listens on 127.0.0.1:PORT (or on all interfaces).
# A bind with SO_REUSEADDR fails exactly when a listener holds the port, as the servers'
# own bind would; TIME_WAIT leftovers do not count.
port_in_use() {
    ! python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

# port_owner PORT: a short description of the process listening on PORT, if ss can tell.
port_owner() {
    command -v ss >/dev/null 2>&1 || return 0
    ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n 1
}

# describe_port_user PORT: " (held by ...)" or nothing, for error messages.
describe_port_user() {
    local owner
    owner=$(port_owner "$1")
    [[ -n $owner ]] && printf ' (held by %s)' "$owner"
    return 0
}

# check_port PORT: validate a port number given by a user.
check_port() {
    if ! [[ $1 =~ ^[0-9]+$ ]] || ((10#$1 < 1 || 10#$1 > 65535)); then
        die "not a TCP port number: '$1'"
    fi
}

# --- processes

# read_pid_file FILE: print the pid stored in FILE, if FILE holds one.
read_pid_file() {
    local pid=""
    [[ -f $1 ]] && read -r pid <"$1" 2>/dev/null
    [[ $pid =~ ^[0-9]+$ ]] && printf '%s\n' "$pid"
    return 0
}

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# pid_args PID: the process's argv, one argument a line (empty if it is gone).
pid_args() { tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null || true; }

# pid_runs PID NEEDLE: true when PID is alive and one of its arguments ends with NEEDLE
# (guards against a recycled pid in a stale pid file).
pid_runs() {
    local arg
    pid_alive "$1" || return 1
    while IFS= read -r arg; do
        [[ $arg == *"$2" ]] && return 0
    done < <(pid_args "$1")
    return 1
}

# stop_pid NAME PID [TIMEOUT]: SIGTERM, wait up to TIMEOUT seconds (default 20), SIGKILL.
stop_pid() {
    local name=$1 pid=$2 timeout=${3:-20} waited=0
    pid_alive "$pid" || return 0
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while pid_alive "$pid" && ((waited < timeout * 5)); do
        sleep 0.2
        waited=$((waited + 1))
    done
    if pid_alive "$pid"; then
        warn "$name (pid $pid) did not stop within ${timeout}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        waited=0
        while pid_alive "$pid" && ((waited < 50)); do
            sleep 0.1
            waited=$((waited + 1))
        done
    fi
    ! pid_alive "$pid" || die "$name (pid $pid) is still alive after SIGKILL"
}

# --- HTTP

# wait_for_http URL TIMEOUT [PID] [BODY]: wait until URL answers 2xx (and, if BODY is
# given, its body starts with BODY). Returns 1 on timeout, 2 when PID died meanwhile.
wait_for_http() {
    local url=$1 timeout=$2 pid=${3:-} body=${4:-} deadline answer
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if answer=$(curl -fsS -m 2 "$url" 2>/dev/null) && [[ $answer == "$body"* ]]; then
            return 0
        fi
        if [[ -n $pid ]] && ! pid_alive "$pid"; then
            return 2
        fi
        sleep 0.2
    done
    return 1
}

# print_log_tail FILE [LINES]: show the end of a log after something failed; only the
# part written since the last "=== ..." start banner, when the log has one.
print_log_tail() {
    local file=$1 lines=${2:-30}
    [[ -s $file ]] || {
        say "(log $file is empty)"
        return 0
    }
    say "last lines of $file:"
    awk '/^=== / { n = 0 } { buf[++n] = $0 } END { for (i = 1; i <= n; i++) print buf[i] }' "$file" |
        tail -n "$lines" | sed 's/^/    /' >&2
}
