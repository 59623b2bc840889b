#!/usr/bin/env bash
# Export a finished run (e.g. the demo: SmolLM2-135M from its GGUF) as f16, q8_0 and adapter-only GGUF
# and print each file's size and fidelity (the README's table). CPU is enough.
# Usage: bash tests/bench/bench_gguf_export.sh RUN_DIR OUT_DIR
set -euo pipefail
run=$1; out=$2; mkdir -p "$out"
for t in f16 q8_0; do
  /usr/bin/time -f "$t: %e s wall, %U s user, max RSS %M KB" lorastudio export-gguf "$run" "$out/demo-$t.gguf" \
    --type $t --overwrite 2>&1 | grep -v "Writing tensor" | tee "$out/export-$t.txt"
done
/usr/bin/time -f "lora: %e s wall, %U s user, max RSS %M KB" lorastudio export-gguf "$run" "$out/demo-lora.gguf" \
  --adapter-only --overwrite 2>&1 | grep -v "Writing tensor" | tee "$out/export-lora.txt"
grep -h "Fidelity\|Wrote\|adapter tensors\|RSS" "$out"/export-*.txt
