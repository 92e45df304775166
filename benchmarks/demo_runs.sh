#!/usr/bin/env bash
# Issue 29's five fresh-clone runs of `make demo`, one after another, and their tables in one file:
#   seed0, seed1, seed2   three training seeds (the same 1200 TempoSynth videos, rendered with seed 0)
#   onecore               seed 0 with the machine restricted to one core (taskset -c 0: half as fast)
#   loaded                seed 0 while `make test` runs beside it (in a clone of its own)
# Each run: a fresh `git clone` of REPO at REF, `make install` (timed apart: the 10-minute bound excludes it),
# then `make demo` timed. Outputs: WORK/<run>.log (everything the demo printed), WORK/tables.md (each run's
# targets table and its wall time). Expect about 1.5 min of install per clone plus 8-10 min per demo run
# (one-core and loaded runs longer): about an hour in all on an idle 2-core machine.
# Each clone (about 6.5 GB with its .venv and the demo's outputs) is deleted after its run, the logs kept;
# KEEP_CLONES=1 keeps them (six clones need about 40 GB).
# Usage: benchmarks/demo_runs.sh [REPO] [REF] [WORK]     (defaults: this repository, HEAD, /tmp/vidtempo_demo_runs)
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
REPO="${1:-$HERE}"
REF="${2:-$(git -C "$HERE" rev-parse HEAD)}"
WORK="${3:-/tmp/vidtempo_demo_runs}"
mkdir -p "$WORK"
TABLES="$WORK/tables.md"
echo "# make demo: fresh clones of $REF ($(date -u +%F), $(nproc --all) CPUs, load $(cut -d' ' -f1 /proc/loadavg) at start)" > "$TABLES"

fresh_clone() {  # NAME -> a fresh clone at REF with .venv installed; prints the install seconds
  local dir="$WORK/$1"
  rm -rf "$dir"
  git clone -q "$REPO" "$dir"
  git -C "$dir" checkout -q "$REF"
  local t0=$SECONDS
  make -C "$dir" install > "$WORK/$1.install.log" 2>&1
  echo $((SECONDS - t0))
}

demo_run() {  # NAME PREFIX DEMO_ARGS: time `PREFIX make demo` in a fresh clone, append its table
  local name=$1 prefix=$2 args=$3 dir="$WORK/$1"
  local install_s
  install_s=$(fresh_clone "$name")
  local beside=""
  if [ "$name" = loaded ]; then
    fresh_clone "${name}_tests" > /dev/null
  fi
  local t0=$SECONDS
  if [ "$name" = loaded ]; then
    (cd "$WORK/${name}_tests" && { make test > "$WORK/${name}_tests.log" 2>&1 && echo "make test exit 0" || echo "make test exit $?"; } >> "$WORK/${name}_tests.log") &
    beside=$!
  fi
  local code=0
  (cd "$dir" && $prefix make demo DEMO_ARGS="$args") > "$WORK/$name.log" 2>&1 || code=$?
  local demo_s=$((SECONDS - t0))
  if [ -n "$beside" ]; then wait "$beside" || true; fi
  {
    echo
    echo "## $name: \`${prefix:+$prefix }make demo DEMO_ARGS=\"$args\"\` (exit $code)"
    echo "install $install_s s (excluded); make demo $((demo_s / 60)) min $((demo_s % 60)) s"
    echo '```'
    # the demo's own summary: from its targets table to the end (the shortened-run note included)
    awk '/stopped at step|vidtempo demo: the TempoSynth targets/{p=1} p' "$WORK/$name.log" | grep -v "^demo outputs" || true
    echo '```'
    if [ -n "$beside" ]; then echo "beside it: $(tail -n 3 "$WORK/${name}_tests.log" | tr '\n' ' ')"; fi
  } >> "$TABLES"
  if [ "${KEEP_CLONES:-0}" != 1 ]; then rm -rf "$dir" "$WORK/${name}_tests"; fi
  echo "$name done: exit $code, $demo_s s"
}

demo_run seed0 "" "--seed 0"
demo_run seed1 "" "--seed 1"
demo_run seed2 "" "--seed 2"
demo_run onecore "taskset -c 0" "--seed 0"
demo_run loaded "" "--seed 0"
echo "tables: $TABLES"
