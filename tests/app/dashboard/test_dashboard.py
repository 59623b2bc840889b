"""The dashboard follows a journal written with JournalWriter, as it would a worker's."""
import pytest

from lorastudio.core.journal import JournalWriter, make_event

GIB = 1024 ** 3


@pytest.fixture
def journal(tmp_path):
    run_dir = tmp_path / "run"
    writer = JournalWriter(run_dir / "events.jsonl")
    yield run_dir, writer
    writer.close()


def follow(page, run_dir):
    page.dashboard.reset(str(run_dir))
    page.process.follow(run_dir)


def write_steps(writer, steps, total=20):
    for n in steps:
        writer.emit("step", step=n, total_steps=total, epoch=n / total, loss=3.0 / n, lr=2e-4, grad_norm=0.5,
                    tokens_per_s=1234.0, elapsed_s=6.0 * n, eta_s=6.0 * (total - n))


def test_steps_move_the_progress_cards_and_plots(qtbot, page, journal):
    run_dir, writer = journal
    follow(page, run_dir)
    writer.emit("start", config={}, devices=[], versions={}, trainable_params=4_200_000,
                total_params=1_240_000_000, total_steps=20)
    writer.emit("phase", name="training", message="Training 20 steps")
    write_steps(writer, range(1, 6))
    writer.emit("eval", step=5, loss=0.75)
    d = page.dashboard
    # The plots are drawn one per turn of the event loop (the loss first), so wait for the last one.
    qtbot.waitUntil(lambda: d.loss_plot.plot.point_count("train") == 5 and d.speed_plot.point_count("throughput") == 5,
                    timeout=5000)
    assert d.progress_label.text() == "Step 5 / 20  ·  25%"
    assert d.progress.value() == 250
    assert d.time_label.text() == "Elapsed 0:30  ·  ETA 1:30"
    assert d.cards["loss"].value.text() == "0.6000"
    assert d.cards["eval"].value.text() == "0.7500" and d.cards["eval"].detail.text() == "at step 5"
    assert d.cards["speed"].value.text() == "1,234" and d.cards["speed"].detail.text() == "4.20 M trainable"
    assert d.lr_plot.point_count("lr") == 5 and d.speed_plot.point_count("throughput") == 5
    assert d.loss_plot.plot.point_count("eval") == 1
    assert d.banner.title.text() == "Training" and d.banner.message.text() == "Training 20 steps"
    assert "eval at step 5: loss 0.7500" in d.log_pane.toPlainText()


def test_smoothing_and_log_scale_toggles(qtbot, page, journal):
    run_dir, writer = journal
    follow(page, run_dir)
    write_steps(writer, range(1, 11))
    plot = page.dashboard.loss_plot
    qtbot.waitUntil(lambda: plot.plot.point_count("train") == 10, timeout=5000)
    plot.smoothing.setValue(0)
    raw = list(plot.plot.curves["train"].yData)
    assert raw == pytest.approx([3.0 / n for n in range(1, 11)])
    plot.smoothing.setValue(90)
    smoothed = list(plot.plot.curves["train"].yData)
    assert smoothed[-1] > raw[-1]                     # the average still remembers the early high losses
    assert plot.plot.point_count("raw") == 10         # raw values stay, faint, behind the smoothed line
    plot.log_box.setChecked(True)
    assert plot.plot.getPlotItem().ctrl.logYCheck.isChecked()


def test_cpu_memory_shows_ram_figures_and_gauge(qtbot, page, journal):
    run_dir, writer = journal
    follow(page, run_dir)
    writer.emit("memory", rss=int(1.5 * GIB), ram_used=6 * GIB, ram_total=16 * GIB)
    d = page.dashboard
    qtbot.waitUntil(lambda: d.memory_plot.point_count("ram") == 1, timeout=5000)
    assert d.cards["ram"].value.text() == "6.0 GiB"
    assert d.cards["ram"].detail.text() == "of 16.0 GiB"
    assert "the worker holds 1.5 GiB" in d.cards["ram"].toolTip()
    assert (d.gauge.label, d.gauge.used, d.gauge.total) == ("RAM", 6 * GIB, 16 * GIB)


def test_cuda_memory_plots_allocated_reserved_and_the_device_total(qtbot, page, journal):
    run_dir, writer = journal
    follow(page, run_dir)
    for i in range(3):
        writer.emit("memory", rss=GIB, ram_used=6 * GIB, ram_total=16 * GIB, cuda_allocated=(2 + i) * GIB,
                    cuda_reserved=(3 + i) * GIB, cuda_peak=5 * GIB, device_used=(4 + i) * GIB,
                    device_total=24 * GIB, device_name="NVIDIA RTX 4090")
    d = page.dashboard
    qtbot.waitUntil(lambda: d.memory_plot.point_count("allocated") == 3, timeout=5000)
    assert list(d.memory_plot.curves["reserved"].yData) == pytest.approx([3, 4, 5])      # GiB
    assert list(d.memory_plot.curves["total"].yData) == pytest.approx([24, 24])
    assert "ram" not in d.memory_plot.curves                 # the CPU lines give way to the GPU's
    assert (d.gauge.label, d.gauge.used, d.gauge.total) == ("VRAM", 6 * GIB, 24 * GIB)
    assert d.gauge.fraction == pytest.approx(0.25)


def test_an_error_shows_message_and_hint_and_the_traceback_only_in_the_log(qtbot, page, journal):
    run_dir, writer = journal
    follow(page, run_dir)
    write_steps(writer, [1])
    writer.emit("log", level="error", message="Traceback (most recent call last):\n  File \"trainer.py\"\nOutOfMemoryError")
    writer.emit("error", kind="oom", message="CUDA out of memory. Tried to allocate 2.00 GiB",
                hint="lower training.batch_size to 1 or training.seq_len to 1024")
    writer.emit("end", status="failed", adapter=None)
    d = page.dashboard
    qtbot.waitUntil(lambda: d.state.status == "failed" and d.banner.title.text() == "Training failed", timeout=5000)
    assert d.banner.message.text() == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert d.banner.hint.isVisible()
    assert d.banner.hint.text() == "What to do: lower training.batch_size to 1 or training.seq_len to 1024"
    assert "Traceback" not in d.banner.message.text() + d.banner.hint.text()
    assert "Traceback (most recent call last)" in d.log_pane.toPlainText()
    assert not page.process.following()            # the journal ended: no more polling


def test_completion_shows_the_adapter_path(qtbot, page, journal):
    run_dir, writer = journal
    follow(page, run_dir)
    write_steps(writer, range(1, 21))
    writer.emit("checkpoint", step=20, path=str(run_dir / "checkpoints" / "step-000020"))
    writer.emit("end", status="completed", adapter=str(run_dir / "adapter"))
    d = page.dashboard
    qtbot.waitUntil(lambda: d.banner.title.text() == "Training completed", timeout=5000)
    assert d.banner.message.text() == f"Adapter saved to {run_dir / 'adapter'}"
    assert d.banner.open_button.isVisible() and d.banner.open_button.text() == "Open adapter folder"
    assert d.progress.value() == 1000 and "ETA 0:00" in d.time_label.text()


def test_a_half_written_last_line_waits_for_its_end(qtbot, page, journal):
    run_dir, writer = journal
    follow(page, run_dir)
    write_steps(writer, [1])
    with open(run_dir / "events.jsonl", "a") as fh:
        fh.write('{"v": 1, "type": "step", "time": 1.0, "step": 2, "total_steps": 20, "epoch": 0.1, "loss": 1.0,')
        fh.flush()
        qtbot.wait(600)
        assert page.dashboard.state.step == 1
        fh.write(' "lr": 0.0002, "grad_norm": null, "tokens_per_s": 10.0, "elapsed_s": 2.0, "eta_s": 30.0}\n')
    qtbot.waitUntil(lambda: page.dashboard.state.step == 2, timeout=5000)


def test_the_final_picture_has_all_its_data_at_once_and_paints_its_plots_one_per_turn(qtbot, page, journal):
    run_dir, writer = journal
    follow(page, run_dir)
    write_steps(writer, range(1, 21))
    writer.emit("memory", rss=GIB, ram_used=6 * GIB, ram_total=16 * GIB)
    d = page.dashboard
    plots = [d.loss_plot.plot, d.lr_plot, d.speed_plot, d.memory_plot]
    qtbot.waitUntil(lambda: d.speed_plot.point_count("throughput") == 20 and all(p.built for p in plots),
                    timeout=5000)
    page.process.detach()
    d.apply(make_event("end", status="completed", adapter=str(run_dir / "adapter")))
    # The data and the figures at once (whoever looks right after `end` sees the final numbers)...
    assert d.banner.title.text() == "Training completed" and d.progress.value() == 1000
    assert [p.point_count(name) for p, name in zip(plots, ("train", "lr", "throughput", "ram"))] == [20, 20, 20, 1]
    # ...the plots' paints one per turn of the event loop, each held back until its turn.
    assert not all(p.updatesEnabled() for p in plots)
    qtbot.waitUntil(lambda: all(p.updatesEnabled() for p in plots), timeout=5000)
