"""The form's validation gates Start with a reason; Start writes a run folder; the form persists."""
import json

import yaml
from conftest import load_data, load_model
from PySide6.QtCore import Qt

from lorastudio.app.train.training_process import WORKER_NICENESS
from lorastudio.core.runtime.launcher import JobHandle


def fill(qtbot, page, model, data):
    load_model(qtbot, page, model)
    load_data(qtbot, page, data)
    page.hardware_panel.set_values({"quantization": "none", "compute_dtype": "auto", "device": "cpu"})
    w = page.training_panel.widgets
    w["training.max_steps"].setValue(6)
    w["training.warmup_steps"].setValue(1)
    w["training.seq_len"].setValue(64)
    w["training.batch_size"].setValue(4)
    w["training.grad_accum"].setValue(1)
    w["training.save_every"].setValue(0)


def test_start_is_disabled_until_model_and_data_are_chosen(qtbot, page, tiny_llama, text_jsonl):
    bar = page.start_bar
    assert not bar.start_button.isEnabled() and bar.reason_label.text() == "Choose a model."
    load_model(qtbot, page, tiny_llama)
    assert bar.reason_label.text() == "Choose a dataset file."
    load_data(qtbot, page, text_jsonl)
    assert bar.start_button.isEnabled() and not bar.reason_label.isVisible()


def test_seq_len_zero_disables_start_and_flags_the_field(qtbot, page, tiny_llama, text_jsonl):
    fill(qtbot, page, tiny_llama, text_jsonl)
    assert page.start_bar.start_button.isEnabled()
    seq = page.training_panel.widgets["training.seq_len"]
    seq.setValue(0)
    assert not page.start_bar.start_button.isEnabled()
    reason = page.start_bar.reason_label.text()
    assert reason.startswith("Sequence length: 0 is not allowed") and "≥ 8 tokens" in reason
    assert seq.property("invalid") is True
    assert page.training_panel.error_label.isVisible() and reason in page.training_panel.error_label.text()
    seq.setValue(64)
    assert page.start_bar.start_button.isEnabled() and seq.property("invalid") is False


def test_warmup_as_long_as_the_run_is_refused(qtbot, page, tiny_llama, text_jsonl):
    fill(qtbot, page, tiny_llama, text_jsonl)
    page.training_panel.widgets["training.warmup_steps"].setValue(6)
    assert not page.start_bar.start_button.isEnabled()
    assert "warm-up must be shorter than max_steps (6)" in page.start_bar.reason_label.text()
    page.training_panel.epochs_radio.setChecked(True)          # epochs: no max_steps to compare with
    assert page.start_bar.start_button.isEnabled()


def test_a_learning_rate_that_is_not_a_number_is_named(qtbot, page, tiny_llama, text_jsonl):
    fill(qtbot, page, tiny_llama, text_jsonl)
    page.training_panel.widgets["training.lr"].setText("fast")
    assert page.start_bar.reason_label.text() == "Learning rate: 'fast' is not a number"
    page.training_panel.widgets["training.lr"].setText("1e-3")
    assert page.start_bar.start_button.isEnabled()
    assert page.check.config.training.lr == 1e-3


def test_effective_batch_arithmetic_is_shown(qtbot, page):
    w = page.training_panel.widgets
    w["training.batch_size"].setValue(2)
    w["training.grad_accum"].setValue(4)
    w["training.seq_len"].setValue(512)
    assert page.training_panel.summary_label.text() == \
        "Effective batch 2 × 4 = 8 examples per step · up to 4,096 tokens"


def test_tooltips_reuse_config_help(page):
    from lorastudio.core.config import TrainingSection, field_help
    assert page.training_panel.widgets["training.seq_len"].toolTip() == field_help(TrainingSection, "seq_len")


def test_no_cuda_means_cpu_and_no_quantization_by_default(page):
    hw = page.hardware_panel
    if hw.gpus:                      # on the GPU machine the default is 4-bit on cuda:0
        assert hw.values()["quantization"] == "4bit"
        return
    assert hw.notice.text() == "No CUDA GPU found — training on CPU without quantization."
    assert hw.values() == {"quantization": "none", "compute_dtype": "auto", "device": "cpu"}


def test_ctrl_return_starts_a_run_folder_with_the_forms_config(qtbot, window, page, tiny_llama, text_jsonl,
                                                               runs_home, monkeypatch):
    launched = []

    def start_train(request):
        launched.append((request.run_dir, request.niceness))
        return JobHandle("train", request.run_dir, _FakePopen())
    monkeypatch.setattr("lorastudio.app.train.training_process.start_train", start_train)
    fill(qtbot, page, tiny_llama, text_jsonl)
    page.start_bar.name_edit.setText("shortcut test")
    qtbot.keyClick(window, Qt.Key_Return, Qt.ControlModifier)
    qtbot.waitUntil(lambda: bool(launched), timeout=10_000)
    run_dir, niceness = launched[0]
    assert niceness == WORKER_NICENESS == 0             # normal priority unless asked (issue 33)
    assert run_dir.parent == runs_home / "runs" and run_dir.name.endswith("shortcut-test")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["model"] == str(tiny_llama) and cfg["data"]["path"] == str(text_jsonl)
    assert cfg["training"]["max_steps"] == 6 and cfg["training"]["seq_len"] == 64
    assert cfg["lora"]["targets"] == ["q_proj", "v_proj"] and cfg["quantization"] == "none"
    assert page.running and page.start_bar.stop_button.isEnabled() and not page.start_bar.start_button.isEnabled()
    assert not page.scroll.widget().isEnabled()          # the form is locked while the run goes


class _FakePopen:
    """A training process that runs (and does nothing) for as long as the test looks."""
    pid, returncode = 0, None

    def poll(self):
        return None

    def send_signal(self, _sig):
        pass


def test_form_values_folders_and_geometry_survive_a_restart(qtbot, window, settings, tiny_llama, text_jsonl,
                                                            runs_home):
    from lorastudio.app.main_window import MainWindow
    page = window.train_page
    fill(qtbot, page, tiny_llama, text_jsonl)
    page.lora_panel.rank_combo.setCurrentText("32")
    page.lora_panel.targets.boxes["o_proj"].setChecked(True)
    page.training_panel.widgets["training.lr"].setText("3e-4")
    window.close()
    assert json.loads(settings.value("train/form"))["lora"]["r"] == 32

    again = MainWindow(settings=settings, runs_root=runs_home / "runs")
    qtbot.addWidget(again)
    p2 = again.train_page
    qtbot.waitUntil(lambda: p2.model_panel.state == "ready" and p2.dataset_panel.preview is not None, timeout=10_000)
    assert p2.model_panel.source() == str(tiny_llama) and p2.dataset_panel.path() == str(text_jsonl)
    assert p2.lora_panel.values()["r"] == 32
    assert p2.lora_panel.targets.selection() == ["q_proj", "v_proj", "o_proj"]
    assert p2.training_panel.widgets["training.lr"].text() == "0.0003"
    assert p2.training_panel.widgets["training.max_steps"].value() == 6
    assert p2.model_panel.last_folder == str(tiny_llama.parent)
    assert p2.check.ok


def test_the_status_line_says_which_memory_mode_and_kernels_ran(qtbot, page, tmp_path):
    """The journal's start event names the memory mode and the kernels; the window shows them."""
    from lorastudio.core.journal import JournalWriter
    run = tmp_path / "run"
    run.mkdir()
    journal = JournalWriter(run / "events.jsonl")
    journal.emit("start", config={}, devices=["NVIDIA H100 80GB HBM3"], versions={}, trainable_params=11_272_192,
                 total_params=1_247_086_592, total_steps=10, memory_mode="lean", kernels=["liger", "fused-lora"])
    journal.emit("step", step=1, total_steps=10, epoch=0.1, loss=2.5, lr=1e-4, grad_norm=1.0,
                 tokens_per_s=44000.0, elapsed_s=0.2, eta_s=2.0)
    journal.close()
    messages = []
    page.message.connect(messages.append)
    page.attach(run)
    qtbot.waitUntil(lambda: any(m.startswith("Step 1 / 10") for m in messages), timeout=5000)
    line = next(m for m in messages if m.startswith("Step 1 / 10"))
    assert line == "Step 1 / 10 · loss 2.5000 · memory mode lean · Liger + fused LoRA"
    assert page.dashboard.cards["speed"].toolTip() == "memory mode lean · Liger + fused LoRA"
