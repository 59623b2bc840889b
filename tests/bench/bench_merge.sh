#!/usr/bin/env bash
# Train a 1B-shaped model in 4-bit for a few steps, then merge it in bf16 and fp32 and report the
# fidelity figures (GPU machine). Usage: bash tests/bench/bench_merge.sh MODEL_DIR OUT_DIR
set -euo pipefail
model=$1; out=$2; mkdir -p "$out"
python3 tests/bench/bench_train.py "$model" --quantization 4bit --steps 20 --seq-len 512 --batch-size 4 --out "$out/train.json"
run=$(python3 -c "import json,sys; print(json.load(open('$out/train.json'))['end']['adapter'].rsplit('/',1)[0])")
for dtype in bf16 fp32; do
  /usr/bin/time -f "merge $dtype: %e s, max RSS %M KB" python3 -m lorastudio.app.launcher merge "$run" "/tmp/merged-$dtype" --dtype $dtype 2>&1 | tee "$out/merge-$dtype.txt"
done
python3 -c "from lorastudio.core.devices import list_gpus; print(list_gpus())" | tee "$out/gpus.txt"
