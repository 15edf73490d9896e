# One call on the lent GPU machine (run it there, from the repository root, with .whl and .snap
# carried): installs the carried wheels, each snapshot's package apart, then evaluates $STEPS, e.g.
#
#     STEPS='run A 120 $TP --batch-size 512; run X 120 $TP --batch-size 512' bash benchmarks/lease_round.sh
#
# `run NAME TIMEOUT SCRIPT ARGS...` runs a benchmark script of snapshot NAME from its own benchmarks/
# folder; it is skipped when it could run past BUDGET seconds of the call (default 580). Records come
# back packed in $OUT/recs.tgz (a call returns only a few files), the whole log as $OUT/all.log:
# commit them here as soon as they come back. The first $TP run of a call writes the videos: give it
# ~95 s. With NEED=H200 the call stops at once, before installing anything, on any other card (a
# draw costs ~100 s of device time instead of a whole round): give the machine back and call again.
set -u
START=$(date +%s)
# the card's name (nvidia-smi and torch.cuda.get_device_name() both read the driver's), before any
# install; the image's torch where nvidia-smi is missing
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
GPU=${GPU:-$(python3 -c "import torch; print(torch.cuda.get_device_name())" 2>/dev/null || echo "no GPU")}
if [[ -n ${NEED:-} && $GPU != *"$NEED"* ]]; then
    echo "GPU: $GPU, not $NEED: nothing run" | tee -a "$OUT/all.log"
    exit 0
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
for d in .snap/*/; do
    python3 -m pip install -q --no-index --no-deps --no-compile --target "/tmp/pkg_$(basename "$d")" "$d"/*.whl || exit 1
done
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/rec"
echo "GPU: $GPU, set-up $(($(date +%s) - START)) s" | tee -a "$OUT/all.log"
# the videos are written once per call and reused by its later runs (~30 s of encoding each, estimated)
TP="throughput.py --videos 520 --questions 26 --frames 10 --decode graph --only optimized --video-dir /tmp/bench-videos"
FP="throughput.py --videos 2 --questions 26 --frames 10 --batch-size 16 --decode graph --only optimized --fp32-check"
JT="judge_throughput.py --items 4096 --batch-sizes 256,512 --judge-prompt instructions-first"

run() {
    local name=$1 limit=$2 elapsed commit
    shift 2
    commit=$(cat ".snap/$name/COMMIT")
    elapsed=$(($(date +%s) - START))
    if ((elapsed + limit > ${BUDGET:-580})); then
        echo "=== skipped $name $* (the call's time)" | tee -a "$OUT/all.log"
        return
    fi
    echo "=== $name $commit python3 $* [t=${elapsed}s]" | tee -a "$OUT/all.log"
    (cd ".snap/$name/benchmarks" && PYTHONPATH="/tmp/pkg_$name:/tmp/site" BENCH_COMMIT=$commit \
        BENCH_RECORD_DIR="$OUT/rec" timeout "$limit" python3 "$@") >>"$OUT/all.log" 2>&1
    echo "--- rc=$? [t=$(($(date +%s) - START))s]" | tee -a "$OUT/all.log"
    tail -25 "$OUT/all.log" | grep -E '"optimized_qps"|judgements|identical|Error' | tail -4
}

eval "$STEPS"
ls "$OUT/rec" | tee -a "$OUT/all.log"
(cd "$OUT" && tar czf recs.tgz rec && rm -rf rec)
