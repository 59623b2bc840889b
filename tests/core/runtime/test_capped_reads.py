"""Reading a long journal a capped amount at a time, as the window does when it re-attaches to a
finished run (app/job_process.JobProcess): every event once and in order, whole lines only, and the
job's end — its own `end`, or a crash put into words — only once everything it wrote has been read."""
import os
import signal
import subprocess
import sys

from lorastudio.core.journal import JournalFollower, JournalWriter, read_events
from lorastudio.core.runtime.follower import JobWatch
from lorastudio.core.runtime.launcher import JobHandle

CAP = 8 * 1024
LONG_LINE = "x" * (3 * CAP)          # a log line longer than the cap: it still arrives whole


def write_run(run_dir, steps, first=1, end="completed", writer=None):
    """A training journal: start, `steps` step events (a long log line every 400), then `end`."""
    writer = writer or JournalWriter(run_dir / "events.jsonl")
    if first == 1:
        writer.emit("start", config={}, devices=[], versions={}, trainable_params=1000, total_params=10_000,
                    total_steps=steps)
    for n in range(first, first + steps):
        writer.emit("step", step=n, total_steps=steps, epoch=n / steps, loss=2.0 / n, lr=1e-4, grad_norm=0.5,
                    tokens_per_s=100.0, elapsed_s=float(n), eta_s=float(steps - n))
        if n % 400 == 0:
            writer.emit("log", level="info", message=f"step {n} " + LONG_LINE)
    if end:
        writer.emit("end", status=end, adapter=None)
    return writer


def read_capped(watch, cap=CAP, stop=lambda w: w.ended):
    """Poll until `stop`; the batches, each a list of events."""
    batches = []
    while not stop(watch):
        batches.append(watch.poll(cap))
        assert len(batches) < 10_000
    return batches


def line_sizes(path):
    return [len(line) for line in path.read_bytes().split(b"\n")[:-1]]


def test_a_long_journal_arrives_whole_and_in_order_over_capped_polls(tmp_path):
    write_run(tmp_path, 3000).close()
    journal = tmp_path / "events.jsonl"
    expected = read_events(journal)
    assert len(expected) == 3000 + 7 + 2 and journal.stat().st_size > 60 * CAP

    watch = JobWatch(JobHandle("train", tmp_path, None))
    batches = read_capped(watch)
    got = [event for batch in batches for event in batch]
    assert got == expected                                 # every event, once, in order
    assert got[-1]["type"] == "end" and watch.outcome.status == "completed"
    assert watch.poll(CAP) == [] and not watch.backlog

    # each poll read about the cap: at most the cap plus the rest of the line the cap cut
    sizes, start, longest = line_sizes(journal), 0, 0
    for batch in batches:
        read = sum(size + 1 for size in sizes[start:start + len(batch)])
        start += len(batch)
        longest = max(longest, read)
        assert read <= CAP + max(sizes) + 1
    assert len(batches) >= journal.stat().st_size // (CAP + max(sizes) + 1)
    assert longest > len(LONG_LINE)                         # a line longer than the cap came in one poll


def test_the_end_is_seen_only_after_the_last_event_even_past_an_earlier_segments_end(tmp_path):
    writer = write_run(tmp_path, 600, end="stopped")        # a run stopped at step 600, then resumed
    writer.emit("phase", name="resuming", message="Resuming from step 600")
    write_run(tmp_path, 900, first=601, writer=writer).close()
    expected = read_events(tmp_path / "events.jsonl")

    watch = JobWatch(JobHandle("train", tmp_path, None))
    data = (tmp_path / "events.jsonl").read_bytes()
    first_end = data.index(b'"status": "stopped"')
    got = watch.poll(data.index(b"\n", first_end) + 1)    # a poll that stops right after that `end`
    assert got[-1]["type"] == "end" and watch.outcome.status == "stopped"
    assert watch.backlog and not watch.ended                # more was written after it
    while not watch.ended:
        got += watch.poll(CAP)
        if watch.ended:
            assert got[-1]["type"] == "end" and got[-1]["status"] == "completed"
    assert got == expected and watch.outcome.status == "completed"


def test_a_crash_is_put_into_words_only_after_everything_the_job_wrote(tmp_path):
    write_run(tmp_path, 2000, end=None).close()             # no `end`: the worker was killed
    proc = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert proc.wait() == -signal.SIGKILL
    watch = JobWatch(JobHandle("train", tmp_path, proc))

    batches = read_capped(watch)
    got = [event for batch in batches for event in batch]
    assert got[:-2] == read_events(tmp_path / "events.jsonl")
    assert [e["type"] for e in got[-2:]] == ["error", "end"] and got[-2]["kind"] == "crashed"
    assert [e["type"] for e in got].count("end") == 1 and len(batches) > 10
    assert watch.outcome.status == "failed"


def test_the_follower_gives_whole_lines_and_keeps_a_half_written_one(tmp_path):
    journal = tmp_path / "events.jsonl"
    writer = JournalWriter(journal)
    writer.emit("log", level="info", message=LONG_LINE)
    writer.emit("phase", name="training", message="go")
    writer.close()
    full = journal.read_bytes()
    half = b'{"v": 1, "type": "phase", "time": 3, "name": "sav'
    with open(journal, "ab") as fh:
        fh.write(half)                                      # a writer in the middle of a line

    follower = JournalFollower(journal)
    first = follower.poll(max_bytes=100)
    assert [e["type"] for e in first] == ["log"] and first[0]["message"] == LONG_LINE
    assert not follower.at_end
    second = follower.poll(max_bytes=100)
    assert [e["type"] for e in second] == ["phase"] and follower.at_end     # the half line waits
    with open(journal, "ab") as fh:
        fh.write(b'ing"}\n')
    assert [e["name"] for e in follower.poll(max_bytes=100)] == ["saving"]
    assert follower.poll(max_bytes=100) == [] and follower.at_end
    assert len(full) > 3 * CAP and os.path.getsize(journal) == len(full) + len(half) + 6
