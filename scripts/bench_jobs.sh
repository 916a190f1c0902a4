#!/usr/bin/env bash
# Times the grid with --jobs 1 and --jobs 2 (fresh result folders, cold stage-1 caches, data
# generated beforehand) and compares every entry's metrics between the two runs.
#
#   scripts/bench_jobs.sh [OUT_DIR] [run arguments...]     (default: --all, the quick grid)
#   THREADS  torch threads per cell in both runs (default 1). CPU float reductions depend on
#            the thread count, so results are bit-identical only at equal threads per cell;
#            THREADS=auto lets --jobs 1 use every thread and --jobs 2 split them (the fastest
#            setting of each), and the comparison then reports the largest metric difference.
#   PYTHON   interpreter (default .venv/bin/python)
# Writes OUT_DIR/summary.txt: wall time of each run, the speed-up, identical or not.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/wsolbench-jobs}
shift || true
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--all)
PY=${PYTHON:-.venv/bin/python}
THREADS=${THREADS:-1}
rm -rf "$OUT"
mkdir -p "$OUT"
"$PY" -m bench data prepare > "$OUT/prepare.log" 2>&1
for J in 1 2; do
  flags=(--jobs "$J")
  [ "$THREADS" != auto ] && flags+=(--threads "$THREADS")
  start=$(date +%s%N)
  "$PY" -m bench run "${ARGS[@]}" "${flags[@]}" --results "$OUT/jobs$J/results" --cache-dir "$OUT/jobs$J/cache" \
    > "$OUT/jobs$J.log" 2>&1 || { echo "--jobs $J failed: see $OUT/jobs$J.log"; exit 1; }
  end=$(date +%s%N)
  echo "$(( (end - start) / 1000000 ))" > "$OUT/jobs$J.ms"
done
"$PY" - "$OUT" "$THREADS" <<'PY' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path
out, threads = Path(sys.argv[1]), sys.argv[2]
t1, t2 = (int((out / f"jobs{j}.ms").read_text()) / 1000 for j in (1, 2))
one = {p.relative_to(out / "jobs1" / "results"): json.loads(p.read_text()) for p in (out / "jobs1" / "results").glob("*/*/seed*.json")}
two = {p.relative_to(out / "jobs2" / "results"): json.loads(p.read_text()) for p in (out / "jobs2" / "results").glob("*/*/seed*.json")}
assert one.keys() == two.keys(), f"different cells: {sorted(set(one) ^ set(two))}"
diffs = [abs(a - two[k]["metrics"][m]) for k, r in one.items() for m, a in r["metrics"].items()]
same = sum(r["metrics"] == two[k]["metrics"] for k, r in one.items())
print(f"cells: {len(one)}; threads per cell: {threads}")
print(f"--jobs 1: {t1:.1f} s; --jobs 2: {t2:.1f} s; speed-up x{t1 / t2:.2f}")
print(f"identical metrics: {same}/{len(one)} cells; largest metric difference {max(diffs, default=0):.2g}")
PY
