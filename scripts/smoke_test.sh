#!/usr/bin/env bash
# Packaging smoke test: build the sdist and a wheel with `python -m build` (the wheel is built from the
# unpacked sdist, so the sdist must build on its own), check that the sdist carries the vendored Eigen and its
# licence, then install each artifact into a fresh virtual environment WITHOUT extras and check that
# `import mfkern` works, `mfkern --version` prints the package version, scripts/smoke_check.py passes (a tiny
# fit of each estimator) and `mfkern demo --quick` runs, saying how to get the figures (no matplotlib there).
#
# Usage: scripts/smoke_test.sh            (PYTHON: the interpreter for the virtual environments, python3)
# Everything is built under a temporary directory, removed at the end; nothing is installed elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mfkern-smoke.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
step() { echo "== smoke: $*"; }

step "python -m build (sdist, then a wheel from it)"
"$PYTHON" -m venv "$WORK/build-env"
"$WORK/build-env/bin/python" -m pip install --quiet --upgrade pip build
"$WORK/build-env/bin/python" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 || {
  tail -50 "$WORK/build.log"; exit 1; }
SDIST=$(ls "$WORK"/dist/mfkern-*.tar.gz)
WHEEL=$(ls "$WORK"/dist/mfkern-*.whl)
# The one version source (pyproject's version is dynamic, read from it by scikit-build-core).
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' python/mfkern/_version.py)
[[ -n "$VERSION" ]] || { echo "no __version__ in python/mfkern/_version.py"; exit 1; }
echo "   $(basename "$SDIST"), $(basename "$WHEEL"), version $VERSION"

step "the sdist carries the vendored Eigen and its licence"
CONTENTS=$(tar tzf "$SDIST")
for member in cpp/third_party/eigen/COPYING.MPL2 cpp/third_party/eigen/Eigen/Core cpp/bindings.cpp CMakeLists.txt; do
  grep -q "/$member\$" <<<"$CONTENTS" || { echo "missing from the sdist: $member"; exit 1; }
done

for artifact in "$WHEEL" "$SDIST"; do
  name=$(basename "$artifact")
  step "install $name into a fresh environment, no extras"
  env_dir="$WORK/env-${name%%.tar.gz}"
  "$PYTHON" -m venv "$env_dir"
  "$env_dir/bin/python" -m pip install --quiet --upgrade pip
  "$env_dir/bin/python" -m pip install --quiet "$artifact"
  (
    cd "$WORK"  # away from the source tree, so the installed package is what is imported
    "$env_dir/bin/python" -c "import mfkern; print('import mfkern:', mfkern.__version__)"
    printed=$("$env_dir/bin/mfkern" --version)
    [[ "$printed" == "mfkern $VERSION" ]] || { echo "mfkern --version printed '$printed', expected 'mfkern $VERSION'"; exit 1; }
    echo "   $printed"
    "$env_dir/bin/python" "$ROOT/scripts/smoke_check.py"
    if "$env_dir/bin/python" -c "import matplotlib" 2>/dev/null; then
      echo "matplotlib is installed without extras: the no-figures path is not exercised"; exit 1
    fi
    "$env_dir/bin/mfkern" demo --quick --out "$WORK/demo-$name" >"$WORK/demo.log" 2>&1 || {
      cat "$WORK/demo.log"; exit 1; }
    grep -q "pip install 'mfkern\[plot\]'" "$WORK/demo.log" || {
      cat "$WORK/demo.log"; echo "the demo did not say how to get the figures"; exit 1; }
    test -s "$WORK/demo-$name/demo.json" || { echo "the demo wrote no demo.json"; exit 1; }
    echo "   mfkern demo --quick: tables written, figures need mfkern[plot] (said so)"
  )
done
step "passed"
