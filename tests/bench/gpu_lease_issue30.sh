#!/usr/bin/env bash
# Issue 30, one 10-minute GPU call: the gpu tests, the 8B checkpointed step ours vs Unsloth (GPU time per
# kernel group), the gradient check. Build the peer site first: ../shared/peers/make_unsloth_site.sh .peers
# (keep .peers out of git), then: run(command="bash tests/bench/gpu_lease_issue30.sh", carry=[".peers"], timeout_s=575)
source tests/bench/gpu_env.sh
export PYTHONUNBUFFERED=1
M=/tmp/bench-models; mkdir -p $M; date
nvidia-smi -L; python -c "import torch, bitsandbytes, transformers, peft; print(torch.__version__, bitsandbytes.__version__, transformers.__version__, peft.__version__)"
( python tests/bench/make_model.py $M/llama-8b --shape llama-8b && python tests/bench/make_model.py $M/llama-1b --shape llama-1b ) > $OUT/make_models.log 2>&1 &
timeout 250 python -m pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors -rA --durations=10 > $OUT/pytest.log 2>&1; echo "pytest rc $?" >> $OUT/pytest.log
wait; date
timeout 245 python tests/bench/profile_step.py $M/llama-8b --vs unsloth --seq 2048 --mb 2 --memory-mode checkpoint --json $OUT/prof8b.json > $OUT/prof8b.log 2>&1; date
timeout 75 python tests/bench/grad_check.py $M/llama-1b 1024 4 --steps 3 > $OUT/grad.log 2>&1; echo "grad rc $?" >> $OUT/grad.log; date
tail -25 $OUT/pytest.log; grep -E "^\||step|RESULT|failed" $OUT/prof8b.log $OUT/grad.log
