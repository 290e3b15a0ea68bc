#!/usr/bin/env bash
# tvmflow on a lent GPU machine: receive the carried wheels, install them, preflight, then
# tune, compile and compare, and put everything into one archive under $OUT.
#
#   bash scripts/gpu/device.sh receive                # a call carrying one part (.gpu/partN)
#   bash scripts/gpu/device.sh run [options]          # the call carrying the last part
#   bash scripts/gpu/device.sh run --cpu-check        # here, on the CPU: stub driver, --dry-run
#
# Options of run:
#   --target NAME        CUDA target preset [h100: sm_90, which the H200 is]
#   --variants LIST      comma list to tune, compile and compare [grouped,pruned,pruned-a8]
#   --trials N           trials per variant [288: grouped has 18 tasks, 16 per round]
#   --per-round N        candidates per round [16]
#   --stages LIST        of preflight,tune,compile,compare [all]; a later call can resume
#   --rounds N           compare's measurement rounds [5]
#   --cpu-check          the whole script on a CPU machine: the stub libcuda.so.1
#                        (stub_libcuda.c) makes TVM load its CUDA runtime, tuning is --dry-run
#                        with a small budget, and compare runs on the host (the h100 compare
#                        must then be refused, naming the missing GPU)
#
# State lives in $TVMFLOW_GPU_STATE [/tmp/tvmflow-gpu]: the received parts, the installed
# site (PYTHONPATH, not a venv: the image's python3 with torch is used as it is), the work
# folder (schedules, artifacts, reports, logs).  It outlasts one call while the machine is
# warm, so a later call resumes.  Whatever happens, $OUT/tvmflow-gpu.tar.gz holds the work
# folder at exit.  Exit codes: 0 done; 3 a preflight check failed; 4 parts missing; else the
# failing stage's.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${TVMFLOW_GPU_STATE:-/tmp/tvmflow-gpu}
PY=${TVMFLOW_GPU_PYTHON:-python3}
OUT=${OUT:-$STATE/out}
mkdir -p "$STATE/parts" "$STATE/work/logs" "$OUT"

say() { printf '[device %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# ---------------------------------------------------------------- receive the parts
receive() {
  local got=0 f
  for f in "$REPO"/.gpu/part*/carry.tar.xz.*; do
    [ -e "$f" ] || continue
    cp -f "$f" "$STATE/parts/" && cp -f "$(dirname "$f")/manifest.json" "$STATE/parts/"
    got=$((got + 1))
  done
  [ -f "$STATE/parts/manifest.json" ] || { say "no carried part found under .gpu/ (carry .gpu/partN)"; return 4; }
  "$PY" - "$STATE/parts" <<'EOF'
import hashlib, json, sys
from pathlib import Path
d = Path(sys.argv[1])
m = json.loads((d / "manifest.json").read_text())
have, missing = [], []
for p in m["parts"]:
    f = d / p["file"]
    if f.is_file() and hashlib.sha256(f.read_bytes()).hexdigest() == p["sha256"]:
        have.append(p["file"])
    else:
        if f.is_file():
            f.unlink()          # a damaged part: it has to come again
        missing.append(p["file"])
print(f"parts: {len(have)} of {len(m['parts'])} here and intact" +
      (f"; missing: {', '.join(missing)}" if missing else ""))
sys.exit(4 if missing else 0)
EOF
}

# ---------------------------------------------------------------- assemble, verify, install
install_site() {
  local site="$STATE/site" sha
  sha=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["sha256"])' "$STATE/parts/manifest.json")
  if [ -f "$site/.carry-sha256" ] && [ "$(cat "$site/.carry-sha256")" = "$sha" ]; then
    say "carried wheels already installed in $site"; return 0
  fi
  cat "$STATE"/parts/carry.tar.xz.* > "$STATE/carry.tar.xz"
  [ "$(sha256sum "$STATE/carry.tar.xz" | cut -d' ' -f1)" = "$sha" ] \
    || { say "the assembled archive does not match the manifest's sha256"; return 4; }
  rm -rf "$STATE/wheels" "$site" && mkdir -p "$STATE/wheels"
  xz -dc "$STATE/carry.tar.xz" | tar -x -C "$STATE/wheels" || return 4
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$STATE"/wheels/*.whl || return 4
  echo "$sha" > "$site/.carry-sha256"
  rm -f "$STATE/carry.tar.xz"
  say "installed $(ls "$STATE"/wheels | tr '\n' ' ')into $site"
}

# ---------------------------------------------------------------- the archive, at any exit
archive() {
  local rc=$?
  tar -C "$STATE" -czf "$OUT/tvmflow-gpu.tar.gz" --exclude='*.so' --exclude='*.tar' work 2>/dev/null
  say "archive: $OUT/tvmflow-gpu.tar.gz ($(du -h "$OUT/tvmflow-gpu.tar.gz" | cut -f1)), exit $rc"
}

stage() {  # stage NAME CMD...: run, log, stop the script on failure
  local name=$1; shift
  say "stage $name: $*"
  local t0=$SECONDS
  "$@" > >(tee -a "$STATE/work/logs/$name.log") 2> >(tee -a "$STATE/work/logs/$name.err" >&2)
  local rc=$?
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >> "$STATE/work/stages.jsonl"
  [ $rc -eq 0 ] || { say "stage $name failed (exit $rc)"; exit $rc; }
}

run() {
  local target=h100 variants=grouped,pruned,pruned-a8 trials=288 per_round=16
  local stages=preflight,tune,compile,compare rounds=5 cpu=0
  while [ $# -gt 0 ]; do
    case $1 in
      --target) target=$2; shift 2 ;;
      --variants) variants=$2; shift 2 ;;
      --trials) trials=$2; shift 2 ;;
      --per-round) per_round=$2; shift 2 ;;
      --stages) stages=$2; shift 2 ;;
      --rounds) rounds=$2; shift 2 ;;
      --cpu-check) cpu=1; shift ;;
      *) echo "Error: unknown option $1 (see the head of $0)" >&2; exit 2 ;;
    esac
  done
  receive || exit 4
  install_site || exit 4
  trap archive EXIT
  export PYTHONPATH="$STATE/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
  export TVMFLOW_SCHEDULES="$STATE/work/schedules" TVMFLOW_ARTIFACTS_DIR="$STATE/work/artifacts"
  export COLUMNS=160
  local dry=()
  if [ $cpu -eq 1 ]; then
    mkdir -p "$STATE/stub"
    gcc -shared -fPIC -O1 -o "$STATE/stub/libcuda.so.1" "$REPO/scripts/gpu/stub_libcuda.c" || exit 2
    export LD_LIBRARY_PATH="$STATE/stub${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    dry=(--dry-run)
    say "CPU check: stub driver $STATE/stub/libcuda.so.1, tuning with --dry-run"
  fi
  local tv="$PY -m tvmflow" flag
  [ $cpu -eq 1 ] && flag=--cpu-check || flag=
  "$PY" -c 'import sys, platform; print("python", platform.python_version(), sys.executable)' \
    | tee "$STATE/work/logs/python.txt"
  case ,$stages, in *,preflight,*)
    stage preflight "$PY" "$REPO/scripts/gpu/preflight.py" $flag --manifest "$STATE/parts/manifest.json" \
      --json "$STATE/work/preflight.json" ;; esac
  local v
  case ,$stages, in *,tune,*)
    for v in ${variants//,/ }; do
      stage "tune-$v" $tv tune --target "$target" -v "$v" --trials "$trials" \
        --per-round "$per_round" "${dry[@]}" --json
    done ;; esac
  case ,$stages, in *,compile,*)
    for v in ${variants//,/ }; do
      stage "compile-$v" $tv compile --target "$target" -v "$v"
      stage "compile-$v-graph" $tv compile --target "$target" -v "$v" --cuda-graph \
        -o "$STATE/work/artifacts/$target-graph/$v.so"
    done ;; esac
  case ,$stages, in *,compare,*)
    if [ $cpu -eq 1 ]; then
      # no GPU here: the CUDA compare must say so (and what is missing), then the host one
      # runs the compare stage's whole path
      if $tv compare --target "$target" -v "$variants" --rounds 1 > "$STATE/work/logs/compare-refused.log" 2>&1; then
        say "compare --target $target ran without a GPU"; exit 1
      fi
      grep -q "no CUDA GPU on this machine: the NVIDIA driver found no usable GPU (cuInit: CUDA_ERROR_NO_DEVICE)" "$STATE/work/logs/compare-refused.log" \
        || { say "compare --target $target failed without naming the missing GPU:"; cat "$STATE/work/logs/compare-refused.log"; exit 1; }
      say "compare --target $target refused, as it must here: $(grep -m1 Error "$STATE/work/logs/compare-refused.log")"
      stage compare-host $tv compare --target host -v "${variants%%,*}" --rounds 1 --min-repeats 5 \
        --min-time 0.05 --warmup 2 --via local -o "$STATE/work/reports/compare-host" --force
    else
      stage compare $tv compare --target "$target" -v "$variants" --rounds "$rounds" \
        -o "$STATE/work/reports/compare-$target" --force
      stage compare-graph $tv compare --target "$target" -v "$variants" --rounds "$rounds" \
        --cuda-graph -o "$STATE/work/reports/compare-$target-graph" --force
    fi ;; esac
  say "done"
}

case ${1:-} in
  receive) receive; exit $? ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash scripts/gpu/device.sh receive | run [--cpu-check] [options]" >&2; exit 2 ;;
esac
