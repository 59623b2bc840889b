"""The memory model and the settings search, on real shapes written as safetensors headers only
(tests/helpers/model_shapes.py): Llama-3.2-1B, Llama-3.1-8B, Qwen2.5-0.5B, Mistral-7B."""
import json

import pytest

from lorastudio.core.config import RunConfig
from lorastudio.core.fit.advice import choose_memory_mode, fit_settings, settings_after_oom
from lorastudio.core.fit.calibration import Calibration, fitted_constant, read_calibration, record
from lorastudio.core.fit.memory_model import NF4_BYTES, estimate
from lorastudio.core.fit.targets import CARDS, GpuMemoryError, parse_memory
from lorastudio.core.models.info import read_model_info
from tests.helpers.model_shapes import header_only_model

GIB = 1 << 30

@pytest.fixture(autouse=True)
def own_data_home(tmp_path, monkeypatch):
    """The user's calibration file lives in the data directory: a fresh one per test."""
    monkeypatch.setenv("LORASTUDIO_HOME", str(tmp_path / "home"))



@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return {name: read_model_info(str(header_only_model(root / name, name)))
            for name in ("llama-1b", "llama-8b", "qwen2.5-0.5b", "mistral-7b")}


def config(info, **training) -> RunConfig:
    quant = training.pop("quantization", "4bit")
    return RunConfig.from_dict({"model": str(info.path), "quantization": quant,
                                "lora": {"r": 16, "alpha": 32, "targets": "all-linear", "dropout": 0.0},
                                "data": {"path": "data.jsonl"},
                                "training": {"batch_size": 4, "seq_len": 1024, **training}})


NO_CAL = Calibration()


def test_weights_by_quantization_keep_embeddings_and_head_in_16_bit(shapes):
    info = shapes["llama-8b"]
    dense = 2 * 128256 * 4096 + 4096 * (2 * 32 + 1)          # embedding, head, norms: 16-bit
    quantized = info.num_parameters - dense
    w4 = estimate(config(info), info, "checkpoint", calibration=NO_CAL).term("weights").bytes
    w8 = estimate(config(info, quantization="8bit"), info, "checkpoint", calibration=NO_CAL).term("weights").bytes
    w16 = estimate(config(info, quantization="none"), info, "checkpoint", calibration=NO_CAL).term("weights").bytes
    assert w4 == pytest.approx(2 * dense + quantized * NF4_BYTES, rel=1e-6)
    assert w8 == pytest.approx(2 * dense + quantized, rel=0.01)      # + an fp32 scale per row
    assert w16 == 2 * info.num_parameters
    assert 5.0 * GIB < w4 < 5.6 * GIB                                   # QLoRA 8B: ≈ 5.3 GiB of weights


def test_tied_embedding_is_counted_once(shapes):
    info = shapes["qwen2.5-0.5b"]
    w16 = estimate(config(info, quantization="none"), info, "none", calibration=NO_CAL).term("weights").bytes
    assert w16 == 2 * info.num_parameters and "lm_head.weight" not in info.tensors


def test_terms_scale_as_they_should(shapes):
    info = shapes["llama-1b"]
    one = {m: estimate(config(info, seq_len=1024), info, m, calibration=NO_CAL, fused_loss=False)
           for m in ("none", "checkpoint", "lean")}
    two = estimate(config(info, seq_len=2048), info, "none", calibration=NO_CAL, fused_loss=False)
    assert one["none"].allocated > one["checkpoint"].allocated > one["lean"].allocated
    assert two.term("activations").bytes == pytest.approx(2 * one["none"].term("activations").bytes, rel=0.01)
    assert two.term("loss").bytes == 2 * one["none"].term("loss").bytes
    lora = one["none"].term("lora")
    assert lora.bytes == 16 * 16 * sum(i + o for i, o in (
        (2048, 2048), (2048, 512), (2048, 512), (2048, 2048), (2048, 8192), (2048, 8192), (8192, 2048))) * 16
    fused = estimate(config(info), info, "checkpoint", calibration=NO_CAL, fused_loss=True)
    assert fused.term("loss").bytes < one["checkpoint"].term("loss").bytes / 10   # no vocab × tokens logits
    keys = [t.key for t in one["none"].terms]
    assert keys == ["weights", "lora", "activations", "loss", "scratch", "context", "slack"]
    assert one["none"].peak - one["none"].allocated == one["none"].term("context").bytes + one["none"].term("slack").bytes


def test_long_micro_batches_count_the_mlp_a_chunk_at_a_time(shapes):
    from lorastudio.core.fit.memory_model import MLP_CHUNK_TOKENS
    info = shapes["llama-8b"]
    act = {(mode, seq): estimate(config(info, batch_size=1, seq_len=seq), info, mode, calibration=NO_CAL,
                                 fused_loss=True).term("activations")
           for mode in ("none", "lean") for seq in (MLP_CHUNK_TOKENS, 4 * MLP_CHUNK_TOKENS)}
    assert act["none", 4 * MLP_CHUNK_TOKENS].bytes == pytest.approx(4 * act["none", MLP_CHUNK_TOKENS].bytes, rel=1e-6)
    # at 4 × the tokens the recomputed layer's MLP still holds one chunk's hidden values: under 4 ×
    assert act["lean", 4 * MLP_CHUNK_TOKENS].bytes < 3 * act["lean", MLP_CHUNK_TOKENS].bytes
    assert "its MLP 8,192 tokens at a time" in act["lean", 4 * MLP_CHUNK_TOKENS].detail
    assert "at a time" not in act["lean", MLP_CHUNK_TOKENS].detail
    many_rows = estimate(config(info, batch_size=8, seq_len=2048), info, "lean", calibration=NO_CAL, fused_loss=True)
    assert "at a time" not in many_rows.term("activations").detail      # 16,384 tokens, but short rows


def test_eight_bit_on_the_fused_path_has_no_int_matmul_buffer(shapes):
    """bitsandbytes' int8 matmul keeps an int32 output and its fp16 copy per call; the fused path
    dequantizes the weight for a bf16 GEMM instead, so its scratch is 4-bit's (dropout or DoRA, which
    the fused path does not take, bring the int8 buffer back)."""
    info = shapes["qwen2.5-0.5b"]
    fused = estimate(config(info, quantization="8bit"), info, "lean", calibration=NO_CAL)
    four = estimate(config(info), info, "lean", calibration=NO_CAL)
    plain = RunConfig.from_dict({**config(info, quantization="8bit").to_dict(),
                                 "lora": {"r": 16, "alpha": 32, "targets": "all-linear", "dropout": 0.1}})
    unfused = estimate(plain, info, "lean", calibration=NO_CAL)
    assert fused.term("scratch").bytes == four.term("scratch").bytes
    assert unfused.term("scratch").bytes - fused.term("scratch").bytes == 4 * 1024 * 4864 * 6


def test_pairs_score_answers_a_bounded_chunk_of_logits_at_a_time(shapes):
    """DPO/ORPO: twice the rows of SFT, and the head's logits a chunk at a time (whatever the batch),
    not tokens × vocabulary."""
    info = shapes["llama-1b"]
    sft = estimate(config(info), info, "checkpoint", calibration=NO_CAL, fused_loss=False)
    dpo = estimate(config(info, method="dpo"), info, "checkpoint", calibration=NO_CAL)
    bigger = estimate(config(info, method="dpo", batch_size=16), info, "checkpoint", calibration=NO_CAL)
    assert dpo.tokens == 2 * sft.tokens
    assert dpo.term("loss").bytes < sft.term("loss").bytes / 10
    chunk_part = dpo.term("loss").bytes - 2 * 4 * 1024 * 2048 * 2 * 2
    assert chunk_part == bigger.term("loss").bytes - 2 * 16 * 1024 * 2048 * 2 * 2 == (1 << 25) // 128256 * 128256 * 8


def test_readme_measurements_within_ten_percent(shapes):
    """The H100 peaks of the README's table (bench_memory_fit.py, the fast path: r 16 on all linear
    layers, Liger, 3 steps) against the model with the shipped constants: four shapes, 4- and 8-bit,
    seq 1024 and 2048, every memory mode."""
    measured = [("llama-1b", "4bit", 1024, 4, "none", 4.973), ("llama-1b", "4bit", 2048, 4, "checkpoint", 2.387),
                ("llama-1b", "4bit", 2048, 4, "lean", 2.020), ("llama-1b", "8bit", 2048, 4, "none", 9.186),
                ("qwen2.5-0.5b", "4bit", 2048, 4, "none", 6.441), ("qwen2.5-0.5b", "8bit", 1024, 4, "lean", 1.004),
                ("qwen2.5-0.5b", "4bit", 1024, 4, "checkpoint", 0.954),
                ("llama-8b", "4bit", 1024, 2, "checkpoint", 6.78), ("llama-8b", "4bit", 2048, 2, "none", 19.80),
                ("llama-8b", "8bit", 2048, 2, "lean", 10.00), ("mistral-7b", "4bit", 2048, 2, "checkpoint", 6.14),
                ("mistral-7b", "8bit", 1024, 2, "none", 14.60), ("mistral-7b", "4bit", 1024, 2, "lean", 5.01),
                ("llama-8b", "4bit", 2048, 2, "checkpoint", 7.60), ("llama-8b", "4bit", 2048, 2, "lean", 6.85)]
    for name, quant, seq, batch, mode, gib in measured:
        info = shapes[name]
        est = estimate(config(info, quantization=quant, seq_len=seq, batch_size=batch), info, mode, fused_loss=True)
        error = (est.allocated / GIB - gib) / gib
        print(f"{name} {quant} {seq} {mode}: predicted {est.allocated / GIB:.2f} GiB, measured {gib} GiB, {error:+.1%}")
        assert abs(error) <= 0.10, (name, quant, mode, error)


def test_choose_memory_mode_picks_the_fastest_that_fits(shapes):
    info = shapes["llama-8b"]
    cfg = config(info, seq_len=2048)
    none = estimate(cfg, info, "none").peak
    checkpoint = estimate(cfg, info, "checkpoint").peak
    assert choose_memory_mode(cfg, info, none + 1)[0] == "none"
    mode, why = choose_memory_mode(cfg, info, checkpoint + 1)
    assert mode == "checkpoint" and "of" in why
    assert choose_memory_mode(cfg, info, 4 * GIB)[0] == "lean"
    assert choose_memory_mode(config(info, memory_mode="none"), info, 4 * GIB) == ("none", "memory_mode: none in the config")
    legacy = config(info, gradient_checkpointing=False)          # an older config's key, mapped on load
    assert choose_memory_mode(legacy, info, 4 * GIB) == ("none", "memory_mode: none in the config")
    assert choose_memory_mode(cfg, info, None)[0] == "checkpoint"


def test_fit_settings_keeps_the_effective_batch_then_shortens_then_quantizes(shapes):
    info = shapes["llama-8b"]
    cfg = config(info, batch_size=8, grad_accum=2, seq_len=2048, quantization="8bit")
    huge = fit_settings(cfg, info, 2000 * GIB)
    assert huge.fits and huge.config.training.batch_size == 16 and huge.config.training.grad_accum == 1
    assert huge.estimate.mode == "none" and "training.memory_mode" not in huge.overrides   # auto picks it
    peak_8 = estimate(cfg, info, "none").peak
    peak_16 = estimate(config(info, batch_size=16, grad_accum=1, seq_len=2048, quantization="8bit"), info, "none").peak
    roomy = fit_settings(cfg, info, (peak_8 + peak_16) // 2)    # 16 × 1 needs checkpointing: 8 × 2 without is faster
    assert roomy.fits and roomy.overrides == {} and roomy.estimate.mode == "none"
    mid = fit_settings(cfg, info, 24 * GIB)
    t = mid.config.training
    assert mid.fits and mid.estimate.peak <= 24 * GIB and t.batch_size * t.grad_accum == 16
    assert t.seq_len == 2048 and mid.config.quantization == "8bit"          # nothing worse was needed
    small = fit_settings(cfg, info, 8 * GIB)
    assert small.fits and small.config.quantization == "4bit" and small.estimate.peak <= 8 * GIB
    assert small.changes[0][0] in ("quantization", "training.seq_len", "training.batch_size")
    none = fit_settings(cfg, info, 3 * GIB)
    assert not none.fits and "nothing fits" in none.reason and none.overrides == {}


def test_after_an_oom_the_retry_shrinks_and_never_grows_the_batch(shapes):
    info = shapes["llama-1b"]
    cfg = config(info, batch_size=8, grad_accum=1, seq_len=2048, quantization="none", memory_mode="none")
    before = estimate(cfg, info, "none").peak
    advice = settings_after_oom(cfg, info, 80 * GIB)
    assert advice.fits and advice.estimate.peak <= 0.8 * min(before, 80 * GIB)
    assert advice.config.training.batch_size <= 8
    assert advice.config.training.batch_size * advice.config.training.grad_accum == 8
    assert "ran out of memory" in advice.reason


def test_calibration_record_and_lookup(tmp_path):
    path = tmp_path / "cal.json"
    record(path, "llama/checkpoint/4bit", 1.2, gpu="H100")
    entry = record(path, "llama/checkpoint/4bit", 1.6, gpu="H100")
    assert entry["runs"] == 2 and entry["value"] == pytest.approx(1.4) and entry["date"]
    cal = read_calibration(path)
    assert cal.constant("llama", "checkpoint", "4bit")[0] == pytest.approx(1.4)
    assert cal.constant("llama", "checkpoint", "8bit") == (1.0, "prior: not yet measured")
    assert cal.constant("llama", "checkpoint", "4bit", on_gpu=False)[0] == 1.0
    assert fitted_constant(10, 4, 3) == 2.0 and fitted_constant(10, 4, 0) is None
    (tmp_path / "bad.json").write_text("{not json")
    assert read_calibration(tmp_path / "bad.json").constants == {}         # damaged: the priors, no crash
    (tmp_path / "odd.json").write_text(json.dumps({"constants": {"x/none": {"value": "big"}}}))
    assert read_calibration(tmp_path / "odd.json").constants == {}


def test_gpu_sizes_and_cards():
    assert parse_memory("24GiB") == 24 * GIB == parse_memory("24 GB") == parse_memory("24")
    assert parse_memory("12288MiB") == 12 * GIB
    for bad in ("lots", "24 TB", "0.1"):
        with pytest.raises(GpuMemoryError):
            parse_memory(bad)
    assert [c.bytes // GIB for c in CARDS] == [8, 12, 16, 24]


def test_a_finished_gpu_run_refines_its_constant(shapes, tmp_path):
    """A run folder as a GPU run leaves it (config.yaml, a journal with memory events) teaches the
    user's calibration file its measured / analytic ratio; a CPU run teaches nothing."""
    from lorastudio.core.fit.calibration import load_calibration
    from lorastudio.core.fit.learn import learn_from_run
    from lorastudio.core.journal import JournalWriter
    info = shapes["llama-1b"]
    cfg = config(info, seq_len=1024, memory_mode="checkpoint")
    run = tmp_path / "run"
    run.mkdir()
    cfg.save(run / "config.yaml")
    unit = estimate(cfg, info, "checkpoint", fused_loss=True, calibration=NO_CAL)
    act = unit.term("activations").bytes
    measured = unit.allocated - act + int(1.25 * act)          # the activations were 25 % above the count
    journal = JournalWriter(run / "events.jsonl")
    journal.emit("start", config=cfg.to_dict(), devices=["H100"], versions={}, trainable_params=1,
                 total_params=1, total_steps=3, memory_mode="checkpoint", kernels=["liger"])
    for step, peak in ((1, measured - 10_000_000), (2, measured)):
        journal.emit("memory", step=step, rss=1, ram_used=1, ram_total=2, cuda_peak=peak, device_total=80 * GIB,
                     device_name="NVIDIA H100 80GB HBM3")
    journal.close()
    entry = learn_from_run(run)
    assert entry["value"] == pytest.approx(1.25, abs=0.01) and entry["gpu"] == "NVIDIA H100 80GB HBM3"
    value, source = load_calibration().constant("llama", "checkpoint", "4bit")
    assert value == pytest.approx(1.25, abs=0.01) and "H100" in source       # the user's file wins
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    cfg.save(cpu / "config.yaml")
    JournalWriter(cpu / "events.jsonl").emit("memory", step=1, rss=1, ram_used=1, ram_total=2)
    assert learn_from_run(cpu) is None


def test_the_kernels_a_run_used_are_read_from_its_start_event():
    """Which kernels ran is data the start event carries (model loading returns what it applied);
    no message text is matched."""
    from lorastudio.core.fit.learn import fused_loss_used

    def start(**fields):
        return {"v": 1, "type": "start", "time": 1.0, **fields}
    said = {"v": 1, "type": "log", "time": 1.0, "level": "info", "message": "Liger kernels applied to llama"}
    assert fused_loss_used([start(kernels=["liger", "fused-lora"])]) is True
    assert fused_loss_used([said, start(kernels=["fused-lora"])]) is False
    assert fused_loss_used([start(kernels=[]), start(kernels=["liger"])]) is True        # the last segment's
    assert fused_loss_used([said, start()]) is None          # a start without kernels (0.1): not known
