"""`python -m lorastudio.core.jobs.serve JOB_DIR`: a base model and runs' adapters served over an
OpenAI-compatible API until stopped.

Reads JOB_DIR/job.yaml (written by core/plans/serve.py; the API key comes in the environment),
journals to JOB_DIR/events.jsonl:
  phase (the GGUF files it writes, loading) · serving{url, models, …} once it answers ·
  traffic{requests, tokens, tokens_per_s, active, by_model} when something changed (at most every
  TRAFFIC_S) · error · end{status: stopped, requests, tokens}
The missing GGUF files are written first (core/engine/gguf/llama_files.py, each renamed into place
once whole); then llama.cpp loads the base once with every adapter, and the front listens
(core/engine/serving.py). A stop (Ctrl+C, SIGTERM, the window's Stop) closes the front's port, then
llama.cpp's; so does the end of the process that started it (a window closed, a CLI killed), so no
server is left holding a port unseen.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from lorastudio.core.engine.serving import Front, Instances, ServingError
from lorastudio.core.plans.serve import KEY_ENV, base_url
from lorastudio.core.runtime.launcher import LOG_FILE
from lorastudio.core.runtime.worker import Job, job_main

POLL_S, TRAFFIC_S = 0.2, 1.0


class Serve:
    def __init__(self, job: Job):
        self.job, self.spec = job, job.spec
        self.llama: Instances | None = None
        self.front: Front | None = None
        self.tokens_per_s = 0.0
        self.parent = os.getppid()          # the CLI or the window that started it

    def files(self) -> None:
        """Write the GGUF files that are not cached yet (a stop is honoured between tensors)."""
        from lorastudio.core.engine.gguf import llama_files
        llama_files.prepare(self.spec, self.job.progress, self.job.should_stop)

    def run(self) -> dict:
        spec = self.spec
        self.files()
        runs = spec["runs"]
        separate = spec.get("separate", False)
        self.job.progress("loading", 0.95, f"Loading {spec['base_name']} and {len(runs)} adapter"
                          f"{'s' * (len(runs) != 1)} into llama.cpp"
                          + (f" ({1 + len(runs)} instances, one per model)" if separate else ""))
        self.llama = Instances(Path(spec["base_gguf"]), [spec["base_name"], *(run["name"] for run in runs)],
                               [Path(run["gguf"]) for run in runs], [run["run_dir"] for run in runs], spec["ctx"],
                               spec["parallel"], separate, spec.get("chat_template"), spec.get("threads"),
                               self.job.job_dir / LOG_FILE)
        models = self.llama.served
        api_key = os.environ.get(KEY_ENV) or None
        if spec.get("api_key") and not api_key:
            raise RuntimeError(f"the API key was not handed to the job ({KEY_ENV} is not set)")
        try:
            self.front = Front(spec["host"], spec["port"], models, api_key)
        except OSError as exc:          # taken since the plan looked (another server started meanwhile)
            raise ServingError(f"cannot listen on {spec['host']} port {spec['port']}: {exc.strerror or exc}",
                               "choose another port (--port), or --port 0 for any free one") from None
        self.front.start()
        url = base_url(spec["host"], self.front.port)
        self.job.emit("serving", url=url, models=[m.name for m in models], host=spec["host"], port=self.front.port,
                      base=spec["base_name"], base_gguf=spec["base_gguf"], api_key=bool(api_key),
                      adapters=[{"name": run["name"], "run": run["run_dir"], "gguf": run["gguf"]} for run in runs],
                      ctx=spec["ctx"], parallel=spec["parallel"], instances=len(self.llama.servers))
        self.watch()
        return {"status": "stopped", **self.totals()}

    def watch(self) -> None:
        """Until a stop is asked for: a traffic event whenever the counts changed (at most every TRAFFIC_S)."""
        last, next_at = None, time.monotonic() + TRAFFIC_S
        try:
            while not self.job.should_stop():
                time.sleep(POLL_S)
                if os.getppid() != self.parent:
                    self.job.log("The program that started the server is gone: the server stops", level="warning")
                    break
                if time.monotonic() < next_at:
                    continue
                next_at = time.monotonic() + TRAFFIC_S
                traffic = self.traffic()
                key = (traffic["requests"], traffic["tokens"], traffic["active"])
                if key != last:
                    last = key
                    self.job.emit("traffic", **traffic)
        except KeyboardInterrupt:       # a second signal (a terminal's Ctrl+C reaches the CLI and us): stop now
            pass

    def traffic(self) -> dict:
        metrics = self.llama.metrics()
        if metrics.get("predicted_tokens_seconds", 0) > 0:     # the last window that generated anything
            self.tokens_per_s = round(metrics["predicted_tokens_seconds"], 2)
        by_model = self.front.counts()
        return {"requests": sum(by_model.values()), "tokens": int(metrics.get("tokens_predicted_total", 0)),
                "tokens_per_s": self.tokens_per_s, "active": int(metrics.get("requests_processing", 0)),
                "by_model": by_model}

    def totals(self) -> dict:
        by_model = self.front.counts() if self.front else {}
        tokens = int(self.llama.metrics().get("tokens_predicted_total", 0)) if self.llama else 0
        return {"requests": sum(by_model.values()), "tokens": tokens}

    def close(self) -> None:
        if self.front is not None:
            self.front.stop()           # the clients' port first
        if self.llama is not None:
            self.llama.close()


def serve(job: Job) -> dict:
    work = Serve(job)
    try:
        return work.run()
    finally:
        work.close()


def main(argv: list[str] | None = None) -> int:
    return job_main("serve", serve, argv)


if __name__ == "__main__":
    sys.exit(main())
