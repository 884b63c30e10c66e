#!/usr/bin/env bash
# One session on a GPU (at most BUDGET seconds, default 540, so one device call of 10 minutes holds it): the
# records a CPU cannot give, each with its device.
#
#   bash benchmarks/gpu_session.sh [OUT] [PACK]   # default OUT: results/gpu_session
#   SIZE=tiny bash benchmarks/gpu_session.sh OUT  # the CPU smoke test (tests/test_gpu_session.py), a few minutes
#
# Steps, in order of priority, each under its own time limit and all under the session's BUDGET (a step that
# runs out is recorded as partial, one that finds the budget spent as skipped; the analyses keep their finished
# records, so running the script again resumes them):
#   1. device.json                 the device and versions (sde_sam._io.provenance)
#   2. training_vs_sde/            training vs SDE on the digits MLP (preset full; tiny in SIZE=tiny)
#   3. m_sharpness/                the m-sharpness trajectories (preset full without the escape study; tiny)
#   4. variants.txt                per-step cost of every variant (benchmarks/variants.py)
#   5. simulate.txt                the simulator benchmark (benchmarks/simulate.py)
#   6. generalization/             C11's GroupNorm-CNN rows at the MLP's length, 3000 steps and 8 seeds
#                                  (analysis.generalization, preset gpu; the CPU recording has 300 steps and
#                                  says so; tiny: the tiny preset)
# STEPS="device generalization" bash benchmarks/gpu_session.sh OUT runs only the named steps (to split a session
# over several device calls).
# SUMMARY.md lists each step's exit status, time and last line (the JSON of ratios for the benchmarks).
#
# Python: $PYTHON, else .venv/bin/python where it exists, else python3. A lent machine's image holds JAX with
# CUDA but not every dependency: the wheels in $WHEELS (default .whl/, fetched here by benchmarks/gpu_wheels.sh)
# are then installed into a temporary folder, without an index. PACK: a folder that receives SUMMARY.md and OUT
# as one gpu_session.tgz (the device tool brings back a few files from $OUT, not a tree); docs/performance.md
# has the whole procedure.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu_session}
pack=${2:-}
size=${SIZE:-full}
budget=${BUDGET:-540}
if [ -n "${PYTHON:-}" ]; then py=$PYTHON; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}

wheels=${WHEELS:-.whl}
needs="import jax, matfree, optax, jaxtyping, sympy, sklearn, scipy, matplotlib, tqdm"
if ! "$py" -c "$needs" 2>/dev/null; then
  if compgen -G "$wheels/*.whl" > /dev/null; then  # the packages the image lacks, carried as wheels
    site=$(mktemp -d)
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl \
      || { echo "could not install $wheels/*.whl" >&2; exit 2; }
    export PYTHONPATH=$site:$PYTHONPATH
  fi
  "$py" -c "$needs" || { echo "$py lacks a dependency: fetch its wheel with benchmarks/gpu_wheels.sh" >&2; exit 2; }
fi

if [ "$size" = tiny ]; then
  tvs=(--preset tiny); msh=(--preset tiny --skip-escape); var=(--hidden 8 --steps 2 --repeats 1); sim=(--tiny)
  gen=(--preset tiny)
  # wide limits: the smoke test shares two CPU cores with the rest of the slow suite (m_sharpness alone: 78 s)
  limits=(120 400 400 300 400 400)
  budget=${BUDGET:-2400}
else
  tvs=(--preset full); msh=(--preset full --skip-escape); var=(--repeats 5); sim=(--repeats 3)
  gen=(--preset gpu)
  limits=(30 170 150 60 90 120)  # 620 s in all: the budget cuts the last step short, never the first ones
fi
steps=${STEPS:-device training_vs_sde m_sharpness variants simulate generalization}

summary="$out/SUMMARY.md"
printf '# GPU session (%s, budget %s s)\n\n| step | exit | seconds | last line |\n|---|---|---|---|\n' \
  "$(date -u +%FT%TZ)" "$budget" > "$summary"
start=$SECONDS

step() {  # step NAME LIMIT LOG COMMAND...
  local name=$1 limit=$2 log=$3
  shift 3
  case " $steps " in *" $name "*) ;; *) return 0 ;; esac
  local left=$((budget - (SECONDS - start)))
  if [ "$left" -lt 10 ]; then
    printf '| %s | skipped | 0 | `session budget of %s s spent` |\n' "$name" "$budget" >> "$summary"
    echo "$name: skipped (session budget of $budget s spent)"
    return 0
  fi
  [ "$left" -lt "$limit" ] && limit=$left
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
if [ -n "$pack" ]; then
  mkdir -p "$pack"
  cp "$summary" "$pack/SUMMARY.md"
  tar czf "$pack/gpu_session.tgz" -C "$(dirname "$out")" "$(basename "$out")"
  echo "packed: $pack/gpu_session.tgz ($(du -k "$pack/gpu_session.tgz" | cut -f1) KiB) and $pack/SUMMARY.md"
fi
