#!/usr/bin/env bash
# Refresh constraints/cpu.txt from a fresh resolve of the project's ranges: for when the project
# moves its CPU stack forward deliberately (README "Environments").
#
#   scripts/refresh_constraints.sh [SPEC ...]
#
# Creates a temporary venv, installs into it exactly what `make venv` installs, but from the
# ranges (`make venv PIN=ranges`: torch==2.13.0 first, then requirements-test.txt -- which
# includes requirements.txt -- and the three editable packages, then any NODEPS_REQUIREMENTS
# step), and writes its `pip freeze` to constraints/cpu.txt: sorted, names normalized (PEP 503),
# without the editable project packages and without installer tooling (pip, setuptools, wheel).
# Each SPEC is an extra pin for this resolve, e.g. `transformers==5.23.0` to hold a package back
# while everything else moves; the specs used are recorded in the file's header.
#
# Then: review `git diff constraints/cpu.txt`, run `make test` (it reinstalls .venv from the new
# pins), and commit both. Environment: PYTHON (default python3), KEEP_VENV=1 keeps the temp venv,
# OUT (default constraints/cpu.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-constraints/cpu.txt}"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/biopost-refresh.XXXXXX")"
cleanup() { if [ "${KEEP_VENV:-0}" = 1 ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi; }
trap cleanup EXIT

pip_args=()
if [ "$#" -gt 0 ]; then
    printf '%s\n' "$@" > "$tmp/pins.txt"
    pip_args=(PIP_ARGS="-c $tmp/pins.txt")
fi

echo "resolving into $tmp/venv (make venv PIN=ranges STACK=cpu${*:+, extra pins: $*}) ..." >&2
make --no-print-directory venv VENV="$tmp/venv" PYTHON="$PYTHON" PIN=ranges STACK=cpu "${pip_args[@]}" >&2

if ! "$tmp/venv/bin/python" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)'; then
    echo "refresh_constraints: the resolve installed a CUDA build of torch; $OUT left as it was" >&2
    exit 1
fi
"$tmp/venv/bin/python" -m pip freeze --all --exclude-editable > "$tmp/freeze.txt"
"$tmp/venv/bin/python" - "$tmp/freeze.txt" "$OUT" "$*" <<'EOF'
import platform
import re
import sys
from datetime import datetime, timezone

freeze, out, pins = sys.argv[1:4]
# the project's own packages (editable, excluded above already) and installer tooling: pip,
# setuptools and wheel come with the venv / `pip install --upgrade pip`, not from our
# requirements; `pip freeze` hides them by default on Python < 3.12, and they do not affect
# what the code computes. tests/test_constraints.py skips the same names.
SKIP = {"biopost", "bioreason", "bioreason-pro", "pip", "setuptools", "wheel", "distribute"}
lines = {}
for line in open(freeze):
    line = line.strip()
    if not line or line.startswith(("#", "-e ")):
        continue
    if "==" not in line:
        sys.exit(f"refresh_constraints: not a pinned line in pip freeze: {line!r}")
    name, version = line.split("==", 1)
    name = re.sub(r"[-_.]+", "-", name).lower()
    if name not in SKIP:
        lines[name] = f"{name}=={version}"

when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
header = f"""\
# Exact versions of the CPU stack: this machine and CI (`make venv` / `make test` install with
# `pip install -c constraints/cpu.txt`). Python {platform.python_version()}, {platform.machine()}.
# Written by scripts/refresh_constraints.sh{(' ' + pins) if pins else ''} on {when}; do not edit by hand:
# change the ranges in requirements*.txt / pyproject.toml (or pass a pin to the script), rerun it.
# Not listed: the editable project packages and installer tooling (pip, setuptools, wheel).
"""
with open(out, "w") as f:
    f.write(header + "".join(lines[k] + "\n" for k in sorted(lines)))
print(f"wrote {out}: {len(lines)} pins", file=sys.stderr)
EOF
