"""`lorastudio fit`: the estimate and its terms, --gpu-memory, --json, --auto and --write; bad input
refused in words; no torch imported (checked in a fresh interpreter)."""
import json
import subprocess
import sys

import pytest
import yaml

from tests.helpers.model_shapes import header_only_model


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_HOME", str(tmp_path / "home"))
    header_only_model(tmp_path / "llama-8b", "llama-8b")
    path = tmp_path / "run.yaml"
    path.write_text("# my run\nmodel: llama-8b\nquantization: 8bit\nlora: {r: 16, targets: all-linear}\n"
                    "data: {path: data.jsonl}\ntraining: {batch_size: 8, grad_accum: 2, seq_len: 2048}\n")
    return path


def fit(capfd, *args):
    from lorastudio.core.cli import main
    capfd.readouterr()
    code = main(["fit", *map(str, args)])
    out, err = capfd.readouterr()
    return code, out, err


def test_terms_and_verdict(cfg, capfd):
    code, out, err = fit(capfd, cfg, "--gpu-memory", "80GiB")
    assert code == 0, err
    for label in ("Base weights (8-bit)", "LoRA weights, gradients, AdamW", "Activations", "Logits and loss",
                  "CUDA context", "Allocator slack"):
        assert label in out
    assert "of 80.0 GiB (--gpu-memory) — fits" in out
    code, out, _ = fit(capfd, cfg, "--gpu-memory", "16GiB")
    assert code == 1 and "does not fit" in out


def test_json_and_cards_without_a_gpu(cfg, capfd, monkeypatch):
    from lorastudio.core.fit import targets
    monkeypatch.setattr(targets, "detected_targets", lambda device="auto": [])
    code, out, _ = fit(capfd, cfg, "--json")
    data = json.loads(out)
    assert code == 0 and data["target"] is None
    assert [c["bytes"] >> 30 for c in data["cards"]] == [8, 12, 16, 24]
    terms = {t["key"]: t["bytes"] for t in data["estimate"]["terms"]}
    assert sum(terms.values()) == data["estimate"]["peak"]


def test_auto_write_keeps_the_effective_batch_and_the_file_valid(cfg, capfd):
    code, out, _ = fit(capfd, cfg, "--gpu-memory", "24GiB", "--auto", "--write")
    assert code == 0 and "Fastest settings that fit" in out and "Wrote" in out
    raw = yaml.safe_load(cfg.read_text())
    t = raw["training"]
    assert t["batch_size"] * t["grad_accum"] == 16 and t["batch_size"] < 8
    assert raw["model"] == "llama-8b"                                  # relative paths stay relative
    code, out, _ = fit(capfd, cfg, "--gpu-memory", "24GiB")
    assert code == 0 and "— fits" in out
    code, out, _ = fit(capfd, cfg, "--gpu-memory", "24GiB", "--auto")
    assert code == 0 and "Already the fastest settings that fit" in out


def test_nothing_fits_changes_nothing(cfg, capfd):
    before = cfg.read_text()
    code, out, _ = fit(capfd, cfg, "--gpu-memory", "2GiB", "--auto", "--write")
    assert code == 1 and "Nothing fits" in out and cfg.read_text() == before


@pytest.mark.parametrize("args, words", [
    (["--gpu-memory", "lots"], "--gpu-memory 'lots' is not a memory size"),
    (["--write"], "--write needs --auto"),
])
def test_bad_arguments(cfg, capfd, args, words):
    code, _, err = fit(capfd, cfg, *args)
    assert code == 2 and words in err and "Traceback" not in err


def test_bad_config_and_missing_model(cfg, capfd, tmp_path):
    cfg.write_text(cfg.read_text().replace("seq_len: 2048", "seq_len: 0"))
    code, _, err = fit(capfd, cfg, "--gpu-memory", "24GiB")
    assert code == 2 and "training.seq_len: 0" in err
    other = tmp_path / "other.yaml"
    other.write_text("model: nowhere\ndata: {path: d.jsonl}\n")
    code, _, err = fit(capfd, other, "--gpu-memory", "24GiB")
    assert code == 2 and "nowhere" in err and "Traceback" not in err


def test_fit_does_not_import_torch(cfg):
    code = ("import sys; from lorastudio.core.cli import main; "
            f"rc = main(['fit', {str(cfg)!r}, '--gpu-memory', '24GiB', '--auto']); "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_max_context_is_the_longest_seq_len_whose_estimate_fits(cfg, capfd):
    from lorastudio.core.config import RunConfig
    from lorastudio.core.fit.memory_model import estimate, with_settings
    from lorastudio.core.models.info import read_model_info
    code, out, _ = fit(capfd, cfg, "--gpu-memory", "24GiB", "--max-context", "--json")
    assert code == 0
    found = json.loads(out)["max_context"]
    assert found["mode"] == "lean" and found["batch_size"] == 1 and found["seq_len"] % 256 == 0
    config = RunConfig.load(cfg)
    config = with_settings(config, {"model": str(cfg.parent / "llama-8b"), "training.batch_size": 1,
                                    "training.grad_accum": 1})
    info = read_model_info(config.model)

    def peak(seq):
        return estimate(with_settings(config, {"training.seq_len": seq}), info, "lean").peak
    assert peak(found["seq_len"]) <= 24 << 30 < peak(found["seq_len"] + 256)
    code, out, _ = fit(capfd, cfg, "--gpu-memory", "24GiB", "--max-context")
    assert f"seq_len {found['seq_len']:,} tokens (batch 1, memory mode lean" in out
    code, longer, _ = fit(capfd, cfg, "--gpu-memory", "48GiB", "--max-context", "--json")
    assert json.loads(longer)["max_context"]["seq_len"] > found["seq_len"]


def test_max_context_when_nothing_fits_and_without_a_size(cfg, capfd, monkeypatch):
    code, out, _ = fit(capfd, cfg, "--gpu-memory", "4GiB", "--max-context")
    assert code == 1 and "not even seq_len 256 fits 4.0 GiB" in out
    from lorastudio.core.fit import targets
    monkeypatch.setattr(targets, "detected_targets", lambda device="auto": [])
    code, _, err = fit(capfd, cfg, "--max-context")
    assert code == 2 and "--max-context needs a GPU size" in err
