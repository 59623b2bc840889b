"""`python -m lorastudio.core.engine.cpu_probe OUT.json`: how fast PyTorch runs a LoRA step's kind of
arithmetic on this CPU, for the window's time-per-step estimate (core/fit/cpu.py), which never
imports torch itself.

The work: a frozen MLP block of a ~1B model's proportions (1,024 → 2,816 → 1,024, no bias) on 512
tokens, forward and backward to its input — what a LoRA step does with every frozen layer — for about
half a second, after one step to warm up. Counted as 4 FLOPs per weight and token (2 forward, 2 for
the input's gradient), the formula core/fit/cpu.py uses for a whole model. Writes
{"flops_per_s", "threads", "torch"} to OUT.json.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

TOKENS, HIDDEN, INNER = 512, 1024, 2816
SECONDS = 0.5


def probe(seconds: float = SECONDS) -> float:
    import torch
    torch.manual_seed(0)
    up = torch.nn.Linear(HIDDEN, INNER, bias=False).requires_grad_(False)
    down = torch.nn.Linear(INNER, HIDDEN, bias=False).requires_grad_(False)
    x = torch.randn(TOKENS, HIDDEN, requires_grad=True)

    def step() -> None:
        x.grad = None
        down(torch.nn.functional.silu(up(x))).sum().backward()
    step()
    done, start = 0, time.perf_counter()
    while True:
        step()
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return 4.0 * 2 * HIDDEN * INNER * TOKENS * done / elapsed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lorastudio.core.engine.cpu_probe OUT.json", file=sys.stderr)
        return 2
    import torch
    rate = probe()
    Path(args[0]).write_text(json.dumps({"flops_per_s": rate, "threads": torch.get_num_threads(),
                                         "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
