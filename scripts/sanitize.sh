#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer runs of mfkern (docs/reliability.md, "Sanitizers").
#
#   1. The C++ core on its own: configured with -DMFKERN_SANITIZE=ON -DMFKERN_BUILD_TESTS=ON, its ctest
#      (cpp/tests/test_core.cpp, once per activation kernel) with leak checking on.
#   2. The Python extension mfkern._core, built with the same sanitizers in the same build directory (the
#      core is compiled once), staged next to a copy of python/mfkern, and a Python subset of the test suite
#      run against it with libasan preloaded into the (uninstrumented) interpreter.
#
# Any sanitizer report fails the run: ASan aborts on its first error, UBSan is fatal at compile time
# (-fno-sanitize-recover=all) and at run time (halt_on_error=1), and the logs are grepped for reports.
#
# Usage: scripts/sanitize.sh [--cpp-only | --python-only] [extra pytest arguments for part 2]
# Environment:
#   SANITIZE_BUILD_DIR         build directory (default build/sanitize)
#   SANITIZE_PYTEST_SELECTION  test files for part 2, relative to the repository root (default below)
#   SANITIZE_JOBS              parallel compile jobs (default: number of CPUs)
#   PYTHON                     interpreter (default python3; needs numpy, scipy, scikit-learn, pytest,
#                              hypothesis and pybind11 importable)
# It never runs pip and does not touch an installed (editable or not) mfkern.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

RUN_CPP=1
RUN_PY=1
case "${1:-}" in
  --cpp-only) RUN_PY=0; shift ;;
  --python-only) RUN_CPP=0; shift ;;
esac

BUILD=${SANITIZE_BUILD_DIR:-$ROOT/build/sanitize}
if [[ -z "${CMAKE_GENERATOR:-}" ]] && command -v ninja >/dev/null; then
  export CMAKE_GENERATOR=Ninja
fi
JOBS=${SANITIZE_JOBS:-$(nproc 2>/dev/null || echo 2)}
PYTHON=${PYTHON:-python3}
DEFAULT_SELECTION="tests/test_core.py tests/test_core_validation.py tests/test_core_dual.py tests/test_checkpoint.py"
DEFAULT_SELECTION+=" tests/test_fuzz.py tests/test_reliability.py tests/test_engine.py"
SELECTION=${SANITIZE_PYTEST_SELECTION:-$DEFAULT_SELECTION}

# UBSan: every check fatal, with a stack trace.
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

log_has_sanitizer_report() {
  grep -E "runtime error:|ERROR: (Address|Leak)Sanitizer|SUMMARY: (Address|UndefinedBehavior|Leak)Sanitizer" "$1"
}

start_all=$(date +%s)
echo "== configure and build ($BUILD)"
options=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DMFKERN_SANITIZE=ON -DCMAKE_CXX_FLAGS=-fno-sanitize-recover=all)
targets=()
if [[ $RUN_CPP == 1 ]]; then
  options+=(-DMFKERN_BUILD_TESTS=ON)
  targets+=(mfkern_cpp_tests)
fi
if [[ $RUN_PY == 1 ]]; then
  # The bindings' target exists under SKBUILD (as in a pip build); LTO off: it only slows the link here.
  options+=(-DSKBUILD=ON -Dpybind11_DIR="$("$PYTHON" -c "import pybind11; print(pybind11.get_cmake_dir())")"
            -DPython_EXECUTABLE="$(command -v "$PYTHON")" -DCMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF)
  targets+=(_core)
fi
cmake -S . -B "$BUILD" "${options[@]}" >/dev/null
cmake --build "$BUILD" --parallel "$JOBS" --target "${targets[@]}"
echo "build: $(( $(date +%s) - start_all )) s"

if [[ $RUN_CPP == 1 ]]; then
  echo "== [1/2] C++ core: ctest under ASan+UBSan (leak checking on)"
  start=$(date +%s)
  CPP_LOG=$BUILD/ctest.log
  set +e
  (cd "$BUILD" && ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1" \
     ctest --output-on-failure -V) >"$CPP_LOG" 2>&1
  status=$?
  set -e
  grep -E "^[0-9]+: (ok|FAIL)|passed, .* failed|tests passed|Test +#" "$CPP_LOG" || true
  if log_has_sanitizer_report "$CPP_LOG"; then
    echo "sanitize.sh: sanitizer report in the C++ tests (log: $CPP_LOG)" >&2
    exit 1
  fi
  if [[ $status != 0 ]] || ! grep -q "100% tests passed" "$CPP_LOG"; then
    echo "sanitize.sh: C++ tests failed under the sanitizers (log: $CPP_LOG)" >&2
    exit 1
  fi
  echo "C++ part: OK in $(( $(date +%s) - start )) s"
fi

if [[ $RUN_PY == 1 ]]; then
  echo "== [2/2] Python extension under ASan+UBSan (libasan preloaded)"
  start=$(date +%s)
  SO=$(find "$BUILD" -maxdepth 1 -name "_core*.so" | head -n 1)
  [[ -n "$SO" ]] || { echo "sanitize.sh: no _core*.so in $BUILD" >&2; exit 1; }
  # grep reads all of nm's output (grep -q would stop early and, under pipefail, fail the pipe with SIGPIPE)
  nm -D "$SO" | grep "__asan_" >/dev/null || { echo "sanitize.sh: $SO is not instrumented" >&2; exit 1; }

  # Stage: the pure-Python package from the source tree plus the sanitized extension.
  STAGE=$BUILD/stage
  rm -rf "$STAGE"
  mkdir -p "$STAGE"
  cp -r python/mfkern "$STAGE/mfkern"
  find "$STAGE/mfkern" -name "*.so" -delete
  cp "$SO" "$STAGE/mfkern/"
  # An editable install of mfkern puts a finder at the front of sys.meta_path, ahead of PYTHONPATH; this
  # sitecustomize drops it so that the staged package is the one imported.
  cat > "$STAGE/sitecustomize.py" <<'PYEOF'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable_")]
PYEOF

  # libasan must be the first library of the process. libstdc++ is preloaded too: the interpreter does not
  # link it, and without it ASan's __cxa_throw interceptor finds no real __cxa_throw when the extension
  # throws (NotPositiveDefinite) and aborts with "CHECK failed: real___cxa_throw != 0".
  LIBASAN=$(readlink -f "$(${CXX:-g++} -print-file-name=libasan.so)")
  LIBSTDCXX=$(readlink -f "$(${CXX:-g++} -print-file-name=libstdc++.so.6)")
  for lib in "$LIBASAN" "$LIBSTDCXX"; do
    [[ -f "$lib" ]] || { echo "sanitize.sh: $lib not found (${CXX:-g++} -print-file-name)" >&2; exit 1; }
  done

  # No leak checking in Python (the interpreter's own arenas and interned objects are reported at exit);
  # allocator_may_return_null: a refused huge allocation raises MemoryError as in a normal build instead of
  # ASan's "requested allocation size exceeds maximum" abort. MFKERN_SANITIZED tells the RSS leak tests to
  # skip (ASan's quarantine keeps freed memory resident).
  run_sanitized() {
    env PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}" LD_PRELOAD="$LIBASAN $LIBSTDCXX" \
      ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1" \
      MFKERN_SANITIZED=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" "$@"
  }

  (cd /tmp && run_sanitized "$PYTHON" -c "
import mfkern._core as c
assert c.__file__.startswith('$STAGE'), c.__file__
print('imported', c.__file__, '| activation kernels:', c.activation_isa, '| scipy BLAS:', c.scipy_blas)
")

  selected=()
  for path in $SELECTION; do
    selected+=("$ROOT/$path")
  done
  PY_LOG=$BUILD/pytest.log
  set +e
  (cd /tmp && run_sanitized "$PYTHON" -m pytest "${selected[@]}" -q -p no:cacheprovider "$@") >"$PY_LOG" 2>&1
  status=$?
  set -e
  grep -E "^(FAILED|ERROR)|[0-9]+ (passed|failed)|Fatal Python error" "$PY_LOG" || tail -n 25 "$PY_LOG"
  if log_has_sanitizer_report "$PY_LOG"; then
    echo "sanitize.sh: sanitizer report in the Python tests (log: $PY_LOG)" >&2
    exit 1
  fi
  if [[ $status != 0 ]]; then
    echo "sanitize.sh: Python tests failed under the sanitizers (exit $status, log: $PY_LOG)" >&2
    exit "$status"
  fi
  echo "Python part: OK in $(( $(date +%s) - start )) s"
fi
echo "sanitize.sh: all OK in $(( $(date +%s) - start_all )) s"
