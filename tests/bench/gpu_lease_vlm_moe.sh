#!/usr/bin/env bash
# Issues 31 and 28, one 10-minute GPU call: the memory model against a Qwen2.5-VL-7B-shaped run with images
# (3 configurations), then the experts of a Qwen3-30B-A3B-shaped model: one layer, PEFT's path against the
# grouped path, and 6 layers trained through the CLI on each path. Needs .peers (bitsandbytes) carried:
#   run(command="bash tests/bench/gpu_lease_vlm_moe.sh", carry=[".peers"], timeout_s=590)
source tests/bench/gpu_env.sh
export PYTHONUNBUFFERED=1
date; nvidia-smi -L
timeout 330 python tests/bench/bench_vlm_memory.py --work /tmp/vlm --out $OUT/vlm.json > $OUT/vlm.log 2>&1; echo "vlm rc $?" >> $OUT/vlm.log
rm -rf /tmp/vlm/model; date
timeout 60 python tests/bench/bench_moe_experts.py --tokens 8192 > $OUT/moe_layer.log 2>&1; echo "moe layer rc $?" >> $OUT/moe_layer.log; date
timeout 170 python tests/bench/bench_moe_train.py --layers 6 --out $OUT/moe_train.json > $OUT/moe_train.log 2>&1; echo "moe train rc $?" >> $OUT/moe_train.log; date
grep -vE "^\{" $OUT/vlm.log | tail -12; cat $OUT/moe_layer.log | tail -4; grep -vE "^\{" $OUT/moe_train.log | tail -8
