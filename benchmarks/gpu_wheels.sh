#!/usr/bin/env bash
# The wheels benchmarks/gpu_session.sh needs on a lent GPU machine, whose image reaches no package index: that
# image holds JAX with CUDA, optax, jaxtyping, sympy, scikit-learn, scipy, matplotlib, tqdm and diffrax, but not
# matfree. Fetched here into .whl/ (git ignores it) at the version this environment uses, for CPython 3.12 on
# x86_64 Linux; name .whl in the device call's carry.
#
#   bash benchmarks/gpu_wheels.sh [PACKAGE ...]   # default: matfree
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
packages=("$@")
[ ${#packages[@]} -eq 0 ] && packages=(matfree)
mkdir -p .whl
for name in "${packages[@]}"; do
  version=$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$name==$version"
done
ls -l .whl
