#!/usr/bin/env bash
# Run the compiled core's tests under AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   tools/sanitize.sh                      # build a copy with ASan+UBSan, run the core's tests
#   tools/sanitize.sh -x -k equivalence    # extra arguments go to pytest (appended)
#   tools/sanitize.sh --self-test asan     # inject an out-of-bounds write: must FAIL
#   tools/sanitize.sh --self-test ubsan    # inject a signed integer overflow: must FAIL
#
# The working tree (uncommitted edits included, ignored files such as build/ and *.so
# left out) is copied to a temporary directory, the extensions are built in place
# *there* with FASTFIT_SANITIZE=address,undefined (setup.py: -O1 -g
# -fno-omit-frame-pointer -fsanitize=...), and pytest runs from the copy. The
# repository itself is never built into or written to.
#
# The Python interpreter is not built with ASan, so the compiler's ASan runtime is
# LD_PRELOADed (it must be the first library loaded). PYTHONMALLOC=malloc sends
# CPython's object allocations through ASan's malloc too. Leak detection is off:
# CPython keeps much of its memory until exit by design, and those are not our leaks.
# Any ASan report or UBSan runtime error aborts the run with a non-zero status.
#
# Environment: PYTHON (default python3), CC (default gcc), FASTFIT_SAN_DIR (build
# directory to use instead of a fresh mktemp one), KEEP=1 (keep the directory).
# After pytest (when no extra pytest arguments were given) tools/short_fit.py runs
# under the same sanitizers. Exit status: 0 only when every selected test passed,
# short_fit.py finished and no sanitizer fired; otherwise the first failing status
# (86 = an ASan report, 87 = a UBSan report, 1 = a failing test). With --self-test the meaning is inverted: 0 when the run failed
# with the expected sanitizer report, 1 when the injected bug went unnoticed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
export CC=${CC:-gcc}
source "$REPO/tools/copy_tree.sh"

SELF_TEST=""
if [ "${1:-}" = "--self-test" ]; then
    SELF_TEST=${2:?"--self-test needs asan or ubsan"}
    shift 2
fi

# The core's tests: everything that runs the compiled core. Interrupt tests send
# SIGINT from a timer thread; they are left out (timing-dependent, and they test
# the Python-level handler, not memory).
TESTS=(tests/test_equivalence.py tests/test_bad_input.py tests/test_properties.py
       tests/test_limits.py tests/test_training.py tests/test_threads.py)
# --capture=sys: pytest captures sys.stdout/stderr only, not file descriptor 2, so a
# sanitizer report (written to fd 2 just before the process exits) reaches the log.
PYTEST_ARGS=(-q -p no:cacheprovider --capture=sys -k "not interrupt")
if [ -n "$SELF_TEST" ]; then
    # one quick test that runs forward, backward, loss and update is enough
    TESTS=(tests/test_equivalence.py)
    PYTEST_ARGS=(-q -p no:cacheprovider --capture=sys -x)
fi

WORK=${FASTFIT_SAN_DIR:-$(mktemp -d /tmp/fastfit-san.XXXXXX)}
cleanup() { [ "${KEEP:-0}" = 1 ] || [ -n "${FASTFIT_SAN_DIR:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT

echo "== copying $REPO -> $WORK"
copy_tree "$REPO" "$WORK"
cd "$WORK"

case "$SELF_TEST" in
    "") ;;
    asan)
        # ff_colsum_* computes the output layer's bias gradient, the last slice of
        # model.grads: db[cols] is one element past the end of the NumPy buffer.
        perl -0pi -e 's/for \(size_t j = 0; j < cols; j\+\+\)\n        db\[j\] = 0;/for (size_t j = 0; j <= cols; j++)\n        db[j] = 0;/' csrc/passes_impl.h
        grep -q 'j <= cols; j++)' csrc/passes_impl.h || { echo "self-test: injection failed"; exit 2; }
        echo "== self-test: injected an out-of-bounds write (db[cols]) into the temp copy's csrc/passes_impl.h"
        ;;
    ubsan)
        # ff_bias_act_* (every forward pass): INT_MAX + rows overflows a signed int.
        sed -i '/T \*restrict row = f + i \* cols;/a\        { volatile int ff_big = 2147483647; ff_big = ff_big + (int)rows; (void)ff_big; }' csrc/passes_impl.h
        grep -q 'ff_big = ff_big + (int)rows' csrc/passes_impl.h || { echo "self-test: injection failed"; exit 2; }
        echo "== self-test: injected a signed integer overflow into the temp copy's csrc/passes_impl.h"
        ;;
    *) echo "unknown self-test '$SELF_TEST' (asan or ubsan)"; exit 2 ;;
esac

# CPython's own CFLAGS carry -fwrapv, which makes signed overflow defined and so
# silences UBSan's signed-integer-overflow check; CFLAGS from the environment come
# after them on the command line, so -fno-wrapv turns the check back on.
export CFLAGS="${CFLAGS:-} -fno-wrapv"
echo "== building with FASTFIT_SANITIZE=address,undefined CFLAGS=$CFLAGS ($($CC --version | head -1))"
if ! FASTFIT_SANITIZE=address,undefined "$PYTHON" setup.py build_ext --inplace > build.log 2>&1; then
    tail -40 build.log; echo "build failed (log: $WORK/build.log)"; exit 2
fi
grep -q -- '-fsanitize=address,undefined' build.log || { echo "sanitizer flags missing from the build"; exit 2; }

LIBASAN=$($CC -print-file-name=libasan.so)
LIBUBSAN=$($CC -print-file-name=libubsan.so)
[ -f "$LIBASAN" ] && [ -f "$LIBUBSAN" ] || { echo "no libasan/libubsan for $CC"; exit 2; }

export LD_PRELOAD="$LIBASAN $LIBUBSAN"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=86:detect_stack_use_after_return=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=87
export PYTHONMALLOC=malloc
export PYTHONPATH="$WORK"
export PYTHONDONTWRITEBYTECODE=1

echo "== LD_PRELOAD=$LD_PRELOAD"
echo "== ASAN_OPTIONS=$ASAN_OPTIONS"
echo "== UBSAN_OPTIONS=$UBSAN_OPTIONS PYTHONMALLOC=$PYTHONMALLOC"
echo "== $PYTHON -m pytest ${PYTEST_ARGS[*]} ${TESTS[*]} $*"
set +e
"$PYTHON" -m pytest "${PYTEST_ARGS[@]}" "${TESTS[@]}" "$@" 2>&1 | tee pytest.log
status=${PIPESTATUS[0]}
fit_status=0
if [ -z "$SELF_TEST" ] && [ "$#" -eq 0 ]; then
    # The same short tour valgrind gets, here natively: on an AVX-512 machine this runs
    # the kernels' avx512f clones (valgrind's emulated CPU only reaches the avx2 ones),
    # and the multi-threaded optimizer update of a model above 2**16 parameters.
    echo "== $PYTHON tools/short_fit.py"
    "$PYTHON" tools/short_fit.py 2>&1 | tee short_fit.log
    fit_status=${PIPESTATUS[0]}
fi
set -e
# The extension really was the instrumented one (a stale uninstrumented .so would pass vacuously).
"$PYTHON" -c "import fastfit._core as c, sys; print('== core loaded from', c.__file__)"
# (grep without -q reads all of nm's output: no SIGPIPE for pipefail to trip on)
nm -D fastfit/_core*.so | grep __asan_report_store > /dev/null || { echo "fastfit/_core is not instrumented"; exit 2; }

if [ -n "$SELF_TEST" ]; then
    want=$([ "$SELF_TEST" = asan ] && echo "ERROR: AddressSanitizer" || echo "runtime error:")
    if [ "$status" -ne 0 ] && grep -q "$want" pytest.log; then
        echo "== self-test $SELF_TEST: PASS (injected bug caught, exit status $status)"
        exit 0
    fi
    echo "== self-test $SELF_TEST: FAIL (exit status $status; no '$want' report)"
    exit 1
fi
echo "== sanitize.sh: pytest exit status $status, short_fit.py exit status $fit_status"
[ "$status" -eq 0 ] && [ "$fit_status" -eq 0 ] && { echo "== sanitize.sh: clean"; exit 0; }
[ "$status" -ne 0 ] && exit "$status"
exit "$fit_status"
