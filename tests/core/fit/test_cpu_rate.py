"""A run that trained on the CPU teaches this machine's rate (issue 33, point 8): the train job's last
step (learn_after_run) folds the run's speed into DATA/cpu-rate.json, which the window's time-per-step
estimate then uses instead of the probe's figure."""
from lorastudio.core.fit.cpu import known_rate, rate_path
from lorastudio.core.fit.learn import learn_after_run
from lorastudio.core.journal import read_events
from lorastudio.core.models.info import read_model_info
from tests.helpers.tiny_models import train_tiny_run


def test_a_finished_cpu_run_teaches_the_rate_and_a_stopped_one_does_not(tmp_path, runs_home, tiny_llama, text_jsonl):
    run = train_tiny_run(tmp_path / "runs" / "cpu-run", tiny_llama, text_jsonl, quantization="none",
                         training__max_steps=6, training__save_every=0)
    said = []
    learn_after_run(run, "stopped", lambda message, level: said.append(message))
    assert said == [] and known_rate() is None
    learn_after_run(run, "completed", lambda message, level: said.append(message))
    assert len(said) == 1 and said[0].startswith("Time estimate: learnt how fast this CPU trains (from 1 run so far)")
    rate, source = known_rate()
    assert source == "learnt from 1 CPU run on this machine" and rate_path().parent == runs_home
    events = read_events(run / "events.jsonl")
    speeds = sorted(e["tokens_per_s"] for e in events if e["type"] == "step" and e["step"] > 2)
    recomputed = next(e for e in events if e["type"] == "start")["memory_mode"] in ("checkpoint", "lean")
    params = read_model_info(tiny_llama).num_parameters
    assert round(rate) == round(speeds[len(speeds) // 2] * params * (6 if recomputed else 4))
