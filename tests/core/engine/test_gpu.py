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
