#!/usr/bin/env bash
# Set up (or check) everything cpbi needs on this machine, idempotently:
#   1. a Python 3.10-3.12 virtualenv in .venv (python3.11 preferred, else python3),
#   2. Java 17+ for Spark (installed with apt-get when missing and running as root),
#   3. the package and its dev extras: pip install -e '.[dev]' - skipped when .venv/.cpbi-installed
#      holds the sha256 of the current pyproject.toml (so a second run takes about a second),
#   4. chromium and its driver for the browser tests of the dashboard and report (apt-get, when root;
#      CPBI_SKIP_BROWSER=1 skips it - those tests then skip with the reason).
# Usage: bash scripts/setup.sh        (run from anywhere; it works in the repository root)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
STAMP="$VENV/.cpbi-installed"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
as_root() { [ "$(id -u)" = "0" ]; }
have() { command -v "$1" >/dev/null 2>&1; }

# Prints "major.minor" when $1 runs and is a Python inside the supported range, else fails.
py_ok() {
    "$1" -c 'import sys; v = sys.version_info[:2]; print("%d.%d" % v); sys.exit(0 if (3, 10) <= v < (3, 13) else 1)' \
        2>/dev/null
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        apt_updated=1
    fi
    say "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ------------------------------------------------------------------ 1. Python virtualenv
if [ -x "$VPY" ] && venv_version=$(py_ok "$VPY"); then
    say "python $venv_version virtualenv: .venv (exists)"
elif [ -e "$VENV" ]; then
    found=$("$VPY" --version 2>&1 || echo "no working interpreter")
    die ".venv exists but is not usable with cpbi (needs Python >=3.10,<3.13; found: $found).
       Remove it (rm -rf .venv) and run this script again."
else
    base=""
    for candidate in python3.11 python3; do
        if have "$candidate" && base_version=$(py_ok "$candidate"); then
            base="$candidate"
            break
        fi
    done
    if [ -z "$base" ]; then
        found=$(python3 --version 2>&1 || echo "no python3 on PATH")
        die "cpbi needs Python >=3.10,<3.13 (3.11 preferred) as python3.11 or python3; found: $found.
       Install Python 3.11 (e.g. apt-get install python3.11 python3.11-venv, or pyenv install 3.11) and rerun."
    fi
    say "creating .venv with $base (Python $base_version)"
    if ! "$base" -m venv "$VENV" 2>/tmp/cpbi-venv-error.$$; then
        rm -rf "$VENV"
        if as_root && have apt-get && grep -q -i -E 'ensurepip|venv' /tmp/cpbi-venv-error.$$; then
            apt_install "python${base_version}-venv" || apt_install python3-venv
            "$base" -m venv "$VENV" || { rm -rf "$VENV"; die "could not create .venv with $base"; }
        else
            cat /tmp/cpbi-venv-error.$$ >&2
            rm -f /tmp/cpbi-venv-error.$$
            die "could not create .venv with $base: install the venv module (e.g. apt-get install python${base_version}-venv)"
        fi
    fi
    rm -f /tmp/cpbi-venv-error.$$
    venv_version="$base_version"
fi

# ------------------------------------------------------------------ 2. Java 17+ (Spark 4 needs it)
# pyspark starts $JAVA_HOME/bin/java when JAVA_HOME is set, else `java` from PATH: check that one.
java_bin() {
    if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then echo "$JAVA_HOME/bin/java"
    elif have java; then command -v java
    fi
}
# Major version of a java binary: "1.8.0_392" -> 8, "17.0.15" -> 17, "21" -> 21.
java_major() {
    "$1" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}' | awk -F'[.+-]' '{ if ($1 == "1") print $2; else print $1 }'
}
java_ok() { case "$JAVA_MAJOR" in ''|*[!0-9]*) return 1 ;; esac; [ "$JAVA_MAJOR" -ge 17 ]; }
JAVA="$(java_bin || true)"
JAVA_MAJOR=""
if [ -n "$JAVA" ]; then JAVA_MAJOR="$(java_major "$JAVA" || true)"; fi
if ! java_ok; then
    what=${JAVA:+"Java ${JAVA_MAJOR:-?} at $JAVA"}
    if as_root && have apt-get; then
        say "Spark needs Java 17+ (found: ${what:-none}); installing it"
        apt_install openjdk-17-jre-headless || apt_install openjdk-21-jre-headless \
            || die "apt-get could not install openjdk-17-jre-headless (or -21); install Java 17+ and rerun"
        hash -r
        if [ -n "${JAVA_HOME:-}" ]; then
            say "note: JAVA_HOME=$JAVA_HOME points at an old Java; unsetting it for the check (unset it in your shell too)"
            unset JAVA_HOME
        fi
        JAVA="$(java_bin || true)"
        JAVA_MAJOR=""
        if [ -n "$JAVA" ]; then JAVA_MAJOR="$(java_major "$JAVA" || true)"; fi
        java_ok || die "Java 17+ still not found after apt-get install (found: ${JAVA:-none} ${JAVA_MAJOR})"
    else
        die "Spark needs Java 17 or newer (found: ${what:-none}). Install a JRE 17+, e.g.
       sudo apt-get install openjdk-17-jre-headless   (Debian/Ubuntu)
       brew install openjdk@17                          (macOS)
       and make sure 'java' is on PATH or JAVA_HOME points at it."
    fi
fi
say "java $JAVA_MAJOR: $JAVA"

# ------------------------------------------------------------------ 3. the package and its dependencies
want="$("$VPY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
    "$ROOT/pyproject.toml")"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"
# The editable install must point at this checkout (it does not when the folder was moved).
installed_here() {
    "$VPY" - "$ROOT" <<'EOF' 2>/dev/null
import os, sys
import cpbi_spark
here = os.path.realpath(os.path.join(sys.argv[1], "lib", "cpbi_spark"))
sys.exit(0 if os.path.realpath(os.path.dirname(cpbi_spark.__file__)) == here else 1)
EOF
}
if [ "$want" = "$have_stamp" ] && [ -x "$VENV/bin/cpbi" ] && installed_here; then
    say "dependencies up to date (pyproject.toml unchanged since the last install): pip skipped"
else
    say "upgrading pip"
    "$VPY" -m pip install --quiet --upgrade pip
    say "pip install -e '.[dev]' (a few minutes on a fresh machine) ..."
    "$VPY" -m pip install --quiet --progress-bar off -e "$ROOT[dev]"
    echo "$want" >"$STAMP"
    say "installed cpbi-spark $("$VPY" -c 'from importlib.metadata import version; print(version("cpbi-spark"))') and its dependencies"
fi
# ------------------------------------------------------------------ 4. headless browser for the UI tests
if have chromium && have chromedriver; then
    say "chromium: $(command -v chromium) (exists)"
elif [ "${CPBI_SKIP_BROWSER:-0}" = "1" ]; then
    say "chromium: skipped (CPBI_SKIP_BROWSER=1); the dashboard and report browser tests will skip"
elif as_root && have apt-get; then
    apt_install chromium chromium-driver || say "warning: apt-get could not install chromium; browser tests will skip"
else
    say "chromium not found and not root: the browser tests will skip (sudo apt-get install chromium chromium-driver)"
fi
say "ready: .venv/bin/cpbi, .venv/bin/python (Python $venv_version), java $JAVA_MAJOR"
