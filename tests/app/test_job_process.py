"""The window's one wrapper around job processes: a long journal (re-attaching to a finished run)
reaches it over several capped ticks, every event once and in order, and `finished` comes right
after the last event."""
from lorastudio.app.job_process import JobProcess
from lorastudio.core.journal import JournalWriter, read_events
from lorastudio.core.runtime.launcher import JobHandle

READ_BYTES = 8 * 1024


class CountingJobProcess(JobProcess):
    """Counts its ticks and the events each one emitted."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches: list[int] = []
        self.event.connect(lambda _ev: self.batches.__setitem__(-1, self.batches[-1] + 1))

    def poll(self) -> None:
        self.batches.append(0)
        super().poll()


def write_finished_run(run_dir, steps):
    writer = JournalWriter(run_dir / "events.jsonl")
    writer.emit("start", config={}, devices=[], versions={}, trainable_params=1000, total_params=10_000,
                total_steps=steps)
    for n in range(1, steps + 1):
        writer.emit("step", step=n, total_steps=steps, epoch=n / steps, loss=2.0 / n, lr=1e-4, grad_norm=0.5,
                    tokens_per_s=100.0, elapsed_s=float(n), eta_s=float(steps - n))
        if n % 5 == 0:
            writer.emit("memory", step=n, rss=2 ** 30, ram_used=2 ** 32, ram_total=2 ** 34)
    writer.emit("end", status="completed", adapter=str(run_dir / "adapter"))
    writer.close()


def test_a_long_journal_arrives_over_capped_ticks_and_finished_comes_after_its_last_event(qtbot, tmp_path):
    write_finished_run(tmp_path, 3000)
    expected = read_events(tmp_path / "events.jsonl")
    job = CountingJobProcess(poll_ms=20, read_bytes=READ_BYTES)
    seen = []
    job.event.connect(lambda ev: seen.append(("event", ev)))
    job.finished.connect(lambda outcome: seen.append(("finished", outcome)))

    with qtbot.waitSignal(job.finished, timeout=30_000):
        job.attach(JobHandle("train", tmp_path, None))       # a run found on disk: no process handle
    events = [item for kind, item in seen if kind == "event"]
    assert events == expected                                # every event, once, in order
    assert [kind for kind, _ in seen].count("finished") == 1 and seen[-1][0] == "finished"
    assert seen[-1][1].status == "completed" and seen[-1][1].output == str(tmp_path / "adapter")

    # Several ticks, none of them carrying much more than the cap (~200 bytes an event here).
    size = (tmp_path / "events.jsonl").stat().st_size
    assert len(job.batches) >= size // (READ_BYTES + 300)
    assert max(job.batches) <= READ_BYTES // 100
    assert not job.running and job.outcome.status == "completed"


def test_finished_comes_in_the_tick_that_delivers_the_end(qtbot, tmp_path):
    write_finished_run(tmp_path, 10)
    job = JobProcess(poll_ms=20)
    seen = []
    job.event.connect(lambda ev: seen.append(ev["type"]))
    job.finished.connect(lambda outcome: seen.append(f"finished {outcome.status}"))
    job.attach(JobHandle("train", tmp_path, None))
    job.poll()                                  # the whole journal fits under the cap: one tick
    assert seen[0] == "start" and seen[-2:] == ["end", "finished completed"] and not job.running
    qtbot.wait(100)
    assert seen.count("finished completed") == 1
