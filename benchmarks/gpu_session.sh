#!/usr/bin/env bash
# One session on a GPU (about 10 minutes on one GPU): the records a CPU cannot give, each with its device.
#
#   bash benchmarks/gpu_session.sh [OUT]          # default OUT: results/gpu_session
#   SIZE=tiny bash benchmarks/gpu_session.sh OUT  # the CPU smoke test (tests/test_gpu_session.py), a few minutes
#
# Steps, each under its own time limit (a step that runs out is recorded as partial; the analyses keep their
# finished records, so running the script again resumes them):
#   1. device.json                 the device and versions (sde_sam._io.provenance)
#   2. training_vs_sde/            training vs SDE on the digits MLP (preset full; tiny in SIZE=tiny)
#   3. m_sharpness/                the m-sharpness trajectories (preset full without the escape study; tiny)
#   4. variants.txt                per-step cost of every variant (benchmarks/variants.py)
#   5. simulate.txt                the simulator benchmark (benchmarks/simulate.py)
#   6. generalization/             C11's GroupNorm-CNN rows at the MLP's length, 3000 steps and 8 seeds
#                                  (analysis.generalization, preset gpu; the CPU recording has 300 steps and
#                                  says so; tiny: the tiny preset)
# STEPS="device generalization" bash benchmarks/gpu_session.sh OUT runs only the named steps (to split a session
# over device calls of at most 10 minutes each).
# SUMMARY.md lists each step's exit status, time and last line (the JSON of ratios for the benchmarks).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu_session}
size=${SIZE:-full}
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}

if [ "$size" = tiny ]; then
  tvs=(--preset tiny); msh=(--preset tiny --skip-escape); var=(--hidden 8 --steps 2 --repeats 1); sim=(--tiny)
  gen=(--preset tiny)
  # wide limits: the smoke test shares two CPU cores with the rest of the slow suite (m_sharpness alone: 78 s)
  limits=(120 400 400 300 400 400)
else
  tvs=(--preset full); msh=(--preset full --skip-escape); var=(--repeats 5); sim=(--repeats 3)
  gen=(--preset gpu)
  limits=(60 200 200 60 120 240)
fi
steps=${STEPS:-device training_vs_sde m_sharpness variants simulate generalization}

summary="$out/SUMMARY.md"
printf '# GPU session (%s)\n\n| step | exit | seconds | last line |\n|---|---|---|---|\n' "$(date -u +%FT%TZ)" > "$summary"

step() {  # step NAME LIMIT LOG COMMAND...
  local name=$1 limit=$2 log=$3
  shift 3
  case " $steps " in *" $name "*) ;; *) return 0 ;; esac
  local t0=$SECONDS rc
  timeout "$limit" "$@" > "$log" 2>&1
  rc=$?
  local status=$rc
  [ "$rc" = 124 ] && status="124 (time limit ${limit} s: partial)"
  printf '| %s | %s | %s | `%s` |\n' "$name" "$status" "$((SECONDS - t0))" \
    "$(tail -n 1 "$log" | cut -c1-300 | tr '|' '/')" >> "$summary"
  echo "$name: exit $rc in $((SECONDS - t0)) s -> $log"
}

step device "${limits[0]}" "$out/device.json" "$py" -c \
  "import json; from sde_sam._io import provenance; print(json.dumps(provenance()))"
step training_vs_sde "${limits[1]}" "$out/training_vs_sde.log" \
  "$py" -m analysis.training_vs_sde "${tvs[@]}" --out "$out/training_vs_sde"
step m_sharpness "${limits[2]}" "$out/m_sharpness.log" \
  "$py" -m analysis.m_sharpness "${msh[@]}" --out "$out/m_sharpness"
step variants "${limits[3]}" "$out/variants.txt" "$py" benchmarks/variants.py "${var[@]}"
step simulate "${limits[4]}" "$out/simulate.txt" "$py" benchmarks/simulate.py "${sim[@]}"
step generalization "${limits[5]}" "$out/generalization.log" \
  "$py" -m analysis.generalization "${gen[@]}" --out "$out/generalization"

echo "results: $out (summary: $summary)"
