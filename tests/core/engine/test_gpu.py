"""GPU-only checks (run by hand on the GPU machine: pytest -m gpu). CI has no GPU."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def llama_1b(tmp_path_factory):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    out = tmp_path_factory.mktemp("m") / "llama-1b"
    subprocess.run([sys.executable, str(BENCH / "make_model.py"), str(out), "--shape", "llama-1b"], check=True)
    return out


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_training_streams_real_vram(llama_1b, tmp_path, quantization):
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, str(BENCH / "bench_train.py"), str(llama_1b), "--quantization", quantization,
                    "--steps", "12", "--seq-len", "512", "--batch-size", "2", "--out", str(out)], check=True)
    r = json.loads(out.read_text())
    assert r["exit"] == 0 and r["steps"] == 12 and r["end"]["status"] == "completed"
    assert 0.3 < r["peak_allocated_gib"] < r["device_total_gib"]
    assert r["device_used_gib"] >= r["peak_reserved_gib"] * 0.9
    assert r["tokens_per_s_median"] > 0


def _losses(model, tmp_path, name, *extra):
    out = tmp_path / f"{name}.json"
    subprocess.run([sys.executable, str(BENCH / "bench_train.py"), str(model), "--quantization", "4bit",
                    "--steps", "50", "--seq-len", "512", "--batch-size", "2", "--targets",
                    "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "--out", str(out), *extra],
                   check=True)
    r = json.loads(out.read_text())
    assert r["exit"] == 0 and len(r["losses"]) == 50
    return r


def test_fast_path_losses_match_the_standard_path(llama_1b, tmp_path):
    """Same data and seed: the fused path's 50 losses follow PEFT's own layers' within bf16 noise."""
    fused = _losses(llama_1b, tmp_path, "fused", "--memory-mode", "checkpoint")
    plain = _losses(llama_1b, tmp_path, "plain", "--memory-mode", "checkpoint", "--no-fused")
    assert "fused-lora" in fused["kernels"] and "fused-lora" not in plain["kernels"]
    worst = max(abs(a - b) / abs(b) for a, b in zip(fused["losses"], plain["losses"]))
    assert worst < 0.01, worst
    assert fused["losses"][-1] < fused["losses"][0]


def test_lean_mode_trains_like_checkpointing_in_less_memory(llama_1b, tmp_path):
    lean = _losses(llama_1b, tmp_path, "lean", "--memory-mode", "lean")
    ckpt = _losses(llama_1b, tmp_path, "ckpt", "--memory-mode", "checkpoint")
    assert lean["memory_mode"] == "lean" and ckpt["memory_mode"] == "checkpoint"
    worst = max(abs(a - b) / abs(b) for a, b in zip(lean["losses"], ckpt["losses"]))
    assert worst < 0.01, worst
    assert lean["peak_allocated_gib"] < ckpt["peak_allocated_gib"]


@pytest.mark.parametrize("shape", [(2048, 2048), (512, 2048), (8192, 2048), (896, 4864), (14336, 4096)])
def test_direct_nf4_dequantization_is_bitsandbytes_own(shape):
    """The fast path's direct calls into bitsandbytes' CUDA kernels give exactly what its public
    dequantize_4bit gives (double quantization, bf16), and are really taken on this machine."""
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from lorastudio.core.engine.fast_lora import _DirectNF4
    weight = torch.randn(shape, dtype=torch.bfloat16, device="cuda")
    packed, state = bnb.functional.quantize_4bit(weight, quant_type="nf4", compress_statistics=True)
    direct = _DirectNF4()
    assert direct.usable(packed, state)
    assert torch.equal(direct(packed, state), bnb.functional.dequantize_4bit(packed, state))
    assert direct.dequantize(packed, state).shape == shape and direct.fns
