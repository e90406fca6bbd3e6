#!/usr/bin/env bash
# Run a short fit (tools/short_fit.py) under valgrind memcheck.
#
#   tools/valgrind_fit.sh                # build a normal copy, run short_fit.py under memcheck
#   tools/valgrind_fit.sh --self-test    # inject an out-of-bounds write: must FAIL
#
# The working tree (uncommitted edits included, build/ and *.so left out) is copied
# to a temporary directory and built in place *there* exactly as setup.py builds a
# release: -O3 plus the -g that CPython's CFLAGS carry, OpenMP on, no sanitizer.
# tools/short_fit.py (every loss and optimizer, float32 and float64, a ragged last
# batch, the step-level API, predict, converted inputs, a multi-threaded update)
# then runs under
#
#   PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=1 --leak-check=no \
#       --fullpath-after= --suppressions=tools/valgrind-python.supp python short_fit.py
#
# PYTHONMALLOC=malloc makes every CPython allocation a malloc that memcheck tracks.
# Leaks are not checked (CPython keeps memory until exit by design). The suppression
# file removes only the interpreter's own uninitialised-value reports and one ld.so
# false positive (see the file). Every remaining report is then classified: it
# "involves fastfit" when any frame lies in the copy's sources or extension modules.
#
# Valgrind emulates a CPU without AVX-512, so under it the kernels' avx2 clones run
# (and OpenBLAS's Haswell kernels); tools/sanitize.sh covers the avx512f clones natively.
#
# Environment: PYTHON (default python3; a pyenv shim is resolved to the real
# executable, valgrind must see the interpreter itself), CC (default gcc),
# VALGRIND_ARGS (extra valgrind options, e.g. --track-origins=yes), VG_SUPPRESS=0
# (no suppression file: shows what it hides; the run then fails on CPython's noise),
# FASTFIT_VG_DIR (build directory instead of a fresh mktemp one), KEEP=1 (keep it).
# Exit status: 0 when valgrind reported no error at all and short_fit.py finished;
# 1 otherwise. With --self-test: 0 when the injected write was reported in fastfit's
# code, 1 when it went unnoticed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
export CC=${CC:-gcc}
unset FASTFIT_SANITIZE
source "$REPO/tools/copy_tree.sh"

SELF_TEST=0
[ "${1:-}" = "--self-test" ] && SELF_TEST=1

command -v valgrind > /dev/null || { echo "valgrind not found (apt-get install valgrind)"; exit 2; }
PY=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')

WORK=${FASTFIT_VG_DIR:-$(mktemp -d /tmp/fastfit-vg.XXXXXX)}
cleanup() { [ "${KEEP:-0}" = 1 ] || [ -n "${FASTFIT_VG_DIR:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT

echo "== copying $REPO -> $WORK"
copy_tree "$REPO" "$WORK"
cd "$WORK"
if [ "$SELF_TEST" = 1 ]; then
    # ff_colsum_* writes the output layer's bias gradient, the last slice of model.grads:
    # db[cols] is one element past the end of the NumPy buffer.
    perl -0pi -e 's/for \(size_t j = 0; j < cols; j\+\+\)\n        db\[j\] = 0;/for (size_t j = 0; j <= cols; j++)\n        db[j] = 0;/' csrc/passes_impl.h
    grep -q 'j <= cols; j++)' csrc/passes_impl.h || { echo "self-test: injection failed"; exit 2; }
    echo "== self-test: injected an out-of-bounds write (db[cols]) into the temp copy's csrc/passes_impl.h"
fi

echo "== building (release flags, $($CC --version | head -1))"
if ! "$PYTHON" setup.py build_ext --inplace > build.log 2>&1; then
    tail -40 build.log; echo "build failed (log: $WORK/build.log)"; exit 2
fi
grep -q -- '-fsanitize' build.log && { echo "unexpected sanitizer build"; exit 2; }
grep -E -- '-c (csrc/kernels.c|fastfit/_core.c) ' build.log | grep -q -- ' -g ' \
    || echo "== note: no -g in the compile lines; reports will lack source lines"

VG_LOG="$WORK/valgrind.log"
VG=(valgrind --tool=memcheck --error-exitcode=1 --leak-check=no --num-callers=40
    --fullpath-after= --log-file="$VG_LOG" ${VALGRIND_ARGS:-})
# VG_SUPPRESS=0 runs without the suppression file: valgrind then fails on the
# interpreter's own reports, and report.txt shows whether any of them involve fastfit.
[ "${VG_SUPPRESS:-1}" = 0 ] || VG+=(--suppressions="$REPO/tools/valgrind-python.supp")
echo "== PYTHONMALLOC=malloc PYTHONPATH=$WORK ${VG[*]} $PY tools/short_fit.py"
set +e
PYTHONMALLOC=malloc PYTHONPATH="$WORK" PYTHONDONTWRITEBYTECODE=1 \
    "${VG[@]}" "$PY" tools/short_fit.py 2>&1 | tee short_fit.log
status=${PIPESTATUS[0]}
set -e

# Classify the reports: which of them have a frame in fastfit's own code?
"$PY" - "$VG_LOG" "$WORK" > report.txt <<'PYEOF'
import re, sys
log, work = sys.argv[1], sys.argv[2]
text = open(log).read().splitlines()
pid = re.compile(r"^==\d+== ?")
blocks, cur = [], []
for line in text:
    body = pid.sub("", line)
    if body.strip() == "":
        if cur:
            blocks.append(cur)
        cur = []
    else:
        cur.append(body)
if cur:
    blocks.append(cur)
kinds = ("Invalid read", "Invalid write", "Invalid free", "Mismatched free", "Conditional jump",
         "Use of uninitialised", "Syscall param", "Source and destination overlap", "Argument ")
errors = [b for b in blocks if b[0].startswith(kinds)]
ours_pat = re.compile(re.escape(work) + r"|_core\.cpython|_cpu\.cpython|\bff_\w+|__pyx_\w*_7fastfit_")
ours = [b for b in errors if any(ours_pat.search(l) for l in b)]
summary = [l for l in text if "ERROR SUMMARY" in l]
print(pid.sub("", summary[-1]) if summary else "ERROR SUMMARY: (missing: valgrind did not finish)")
by_kind = {}
for b in errors:
    k = re.sub(r" of size \d+", "", b[0].split("(")[0].strip())
    by_kind[k] = by_kind.get(k, 0) + 1
print(f"unsuppressed reports (contexts) in the log: {len(errors)}"
      + (" (" + ", ".join(f"{v} {k}" for k, v in sorted(by_kind.items())) + ")" if by_kind else ""))
print(f"reports with a frame in fastfit's code: {len(ours)}")
for b in ours[:10]:
    print("----")
    print("\n".join(b[:16]))
PYEOF
echo "== valgrind exit status $status; log $VG_LOG"
cat report.txt
ok_run=$(grep -c "short_fit: OK" short_fit.log || true)
n_ours=$(sed -n 's/^reports with a frame in fastfit.s code: //p' report.txt)

if [ "$SELF_TEST" = 1 ]; then
    if [ "$status" -ne 0 ] && [ "${n_ours:-0}" -gt 0 ] && grep -q "Invalid write" report.txt; then
        echo "== self-test: PASS (the injected write was reported in fastfit's code)"; exit 0
    fi
    echo "== self-test: FAIL (valgrind status $status, $n_ours reports in fastfit's code)"; exit 1
fi
if [ "$status" -eq 0 ] && [ "$ok_run" -ge 1 ]; then
    echo "== valgrind_fit.sh: clean"; exit 0
fi
echo "== valgrind_fit.sh: FAILED (see $VG_LOG; set KEEP=1 to keep it)"
exit 1
