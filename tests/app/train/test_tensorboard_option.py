"""The Train page's "TensorBoard files" option: RUN/tensorboard/ follows the journal the page
follows (written in the window's process by core/tensorboard.py: no heavy dependency), and the
choice is kept across starts."""
from lorastudio.core.journal import JournalWriter
from lorastudio.core.tensorboard import read_scalars


def follow_a_run(qtbot, page, run_dir):
    writer = JournalWriter(run_dir / "events.jsonl")
    page.attach(run_dir)
    for n in (1, 2):
        writer.emit("step", step=n, total_steps=2, epoch=n / 2, loss=2.0 / n, lr=1e-3, grad_norm=0.5,
                    tokens_per_s=50.0, elapsed_s=n, eta_s=2 - n)
    writer.emit("eval", step=2, loss=0.9)
    with qtbot.waitSignal(page.process.finished, timeout=5000):
        writer.emit("end", status="completed", adapter=None)
    writer.close()


def test_ticked_the_run_gets_tensorboard_files(qtbot, window, tmp_path):
    page = window.train_page
    page.start_bar.tensorboard_box.setChecked(True)
    run_dir = tmp_path / "run"
    follow_a_run(qtbot, page, run_dir)
    qtbot.waitUntil(lambda: any((run_dir / "tensorboard").glob("events.out.tfevents.*"))
                    and ("eval/loss", 2, 0.8999999761581421) in read_scalars(
                        next((run_dir / "tensorboard").glob("events.out.tfevents.*"))), timeout=10_000)
    (path,) = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    assert [(s, round(v, 3)) for tag, s, v in read_scalars(path) if tag == "train/loss"] == [(1, 2.0), (2, 1.0)]


def test_unticked_nothing_is_written_and_the_choice_is_kept(qtbot, window, settings, tmp_path):
    page = window.train_page
    assert not page.start_bar.tensorboard_box.isChecked()
    follow_a_run(qtbot, page, tmp_path / "run")
    qtbot.wait(300)
    assert not (tmp_path / "run" / "tensorboard").exists()
    page.start_bar.tensorboard_box.setChecked(True)
    window.save_settings()
    assert settings.value("train/tensorboard") == "true"
