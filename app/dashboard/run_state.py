"""What the dashboard shows, as plain data: the journal's events folded into series and figures.

Qt-free: `RunState.apply(event)` is the whole logic of the live dashboard, and the widgets only
draw what it holds. Memory is plotted against seconds since the run started; loss, learning rate
and throughput against the optimizer step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from lorastudio.core.runs.listing import COMPLETED, FAILED, RUNNING, STOPPED


MAX_LOG_LINES = 5000
IDLE, STARTING = "idle", "starting"           # the dashboard's own: nothing followed yet, no `start` yet
FINAL = (COMPLETED, STOPPED, FAILED)


@dataclass
class Series:
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def add(self, x: float, y: float | None) -> None:
        if y is not None:
            self.x.append(x)
            self.y.append(y)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def last(self) -> float | None:
        return self.y[-1] if self.y else None


@dataclass
class RunState:
    status: str = IDLE
    phase: str = ""
    run_dir: str = ""
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    trainable_params: int = 0
    memory_mode: str = ""           # none | checkpoint | lean, from the start event (0.2+)
    kernels: list = field(default_factory=list)
    total_params: int = 0
    loss: Series = field(default_factory=Series)
    eval_loss: Series = field(default_factory=Series)
    lr: Series = field(default_factory=Series)
    tokens_per_s: Series = field(default_factory=Series)
    vram_allocated: Series = field(default_factory=Series)
    vram_reserved: Series = field(default_factory=Series)
    ram_used: Series = field(default_factory=Series)
    rss: Series = field(default_factory=Series)
    device_total: int | None = None
    device_used: int | None = None
    device_name: str = ""
    gpu_util: Series = field(default_factory=Series)     # % busy, against seconds (NVML, from the worker)
    gpu_temp: int | None = None                          # °C
    gpu_power: float | None = None                       # W
    gpu_power_limit: float | None = None                 # W
    ram_total: int | None = None
    last_memory: dict = field(default_factory=dict)
    checkpoints: list[tuple[int, str]] = field(default_factory=list)
    error: dict | None = None
    adapter: str | None = None
    log: list[str] = field(default_factory=list)
    stopping: bool = False          # Stop was asked for; the worker has not ended yet
    _t0: float | None = None
    began: float | None = None      # when the run began (Start, or its first event): Elapsed before the first step
    _step_time: float | None = None  # when the last step event was written
    _first_step: tuple[int, float] | None = None    # (step, elapsed_s) of this segment's first (warm-up) step
    _pace: float = 0.0              # seconds a step, over the steps after the first

    # ---- folding events ---------------------------------------------------------------------
    def apply(self, event: dict) -> None:
        if self._t0 is None:
            self._t0 = event["time"]
        if self._step_time is None and (self.began is None or event["time"] < self.began):
            self.began = event["time"]         # the run's first event (earlier than the window's start)
        handler = getattr(self, "_on_" + event["type"], None)
        if handler is not None:
            handler(event)

    def _on_start(self, e: dict) -> None:
        self.status = RUNNING
        self.total_steps = e["total_steps"]
        self.trainable_params, self.total_params = e["trainable_params"], e["total_params"]
        self.memory_mode, self.kernels = e.get("memory_mode") or "", list(e.get("kernels") or [])
        self._t0 = e["time"]
        resumed_at = e.get("resumed_at") or 0
        self.step = resumed_at
        self._first_step = None                 # a resumed segment warms up again
        for series in (self.loss, self.eval_loss, self.lr, self.tokens_per_s):    # steps redone after a resume
            keep = next((i for i, x in enumerate(series.x) if x > resumed_at), len(series.x))
            del series.x[keep:], series.y[keep:]

    def _on_phase(self, e: dict) -> None:
        if self.status in FINAL or e["name"] == "resuming":    # the journal goes on: a resumed run
            self.status, self.error, self.adapter = STARTING, None, None
            self.began, self._step_time, self._first_step = e["time"], None, None
        self.phase = e.get("message") or e["name"].replace("_", " ").capitalize()
        self.add_log(f"— {self.phase}")

    def _on_step(self, e: dict) -> None:
        self.status = RUNNING
        self.step, self.total_steps, self.epoch = e["step"], e["total_steps"], e["epoch"]
        self.elapsed_s, self._step_time = e["elapsed_s"], e["time"]
        # The first step of a segment carries the warm-up (compilation, caches, the first batches
        # read): an ETA extrapolated from it reads hours for a run of minutes. The ETA waits for a
        # second step and then uses the pace of the steps after the first.
        if self._first_step is None or e["step"] <= self._first_step[0]:
            self._first_step = (e["step"], e["elapsed_s"])
            self.eta_s = None
        else:
            first, first_elapsed = self._first_step
            pace = self._pace = (e["elapsed_s"] - first_elapsed) / (e["step"] - first)
            self.eta_s = max(0.0, pace * (e["total_steps"] - e["step"])) if pace > 0 else e["eta_s"]
        self.loss.add(e["step"], e["loss"])
        self.lr.add(e["step"], e["lr"])
        self.tokens_per_s.add(e["step"], e["tokens_per_s"])

    def _on_eval(self, e: dict) -> None:
        self.eval_loss.add(e["step"], e["loss"])
        self.add_log(f"eval at step {e['step']}: loss {e['loss']:.4f}")

    def _on_memory(self, e: dict) -> None:
        t = e["time"] - (self._t0 or e["time"])
        self.last_memory = e
        self.ram_total = e["ram_total"]
        self.ram_used.add(t, e["ram_used"])
        self.rss.add(t, e["rss"])
        if e.get("cuda_allocated") is not None:
            self.vram_allocated.add(t, e["cuda_allocated"])
            self.vram_reserved.add(t, e.get("cuda_reserved"))
            self.device_total = e.get("device_total") or self.device_total
            self.device_used = e.get("device_used")
            self.device_name = e.get("device_name") or self.device_name
            self.gpu_util.add(t, e.get("gpu_util"))
            self.gpu_temp, self.gpu_power = e.get("gpu_temp"), e.get("gpu_power")
            self.gpu_power_limit = e.get("gpu_power_limit") or self.gpu_power_limit

    def _on_checkpoint(self, e: dict) -> None:
        self.checkpoints.append((e["step"], e["path"]))
        self.add_log(f"checkpoint at step {e['step']}: {e['path']}")

    def _on_log(self, e: dict) -> None:
        self.add_log(e["message"] if e["level"].lower() == "info" else f"[{e['level']}] {e['message']}")

    def _on_error(self, e: dict) -> None:
        self.error = e
        self.add_log(f"[error] {e['kind']}: {e['message']}")
        if e.get("traceback"):
            self.add_log(str(e["traceback"]).rstrip())

    def _on_end(self, e: dict) -> None:
        self.status = e["status"]
        self.stopping = False
        self.adapter = e.get("adapter")
        self.eta_s = 0 if self.status == COMPLETED else None
        self.add_log(f"— run {self.status}" + (f"; adapter saved to {self.adapter}" if self.adapter else ""))

    def add_log(self, line: str) -> None:
        self.log.append(line)
        if len(self.log) > MAX_LOG_LINES:
            del self.log[: len(self.log) - MAX_LOG_LINES]

    # ---- figures for the widgets --------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in FINAL

    def live_elapsed(self, now: float) -> float | None:
        """Elapsed at `now` while the run is live: the last step's figure plus the time since it was
        written, or the time since the run began before its first step (loading takes minutes on a
        CPU); the last step's figure once it has ended."""
        if self.finished or self.status == IDLE:
            return self.elapsed_s if self.step else None
        if self._step_time is not None:
            return self.elapsed_s + max(0.0, now - self._step_time)
        return max(0.0, now - self.began) if self.began is not None else None

    def live_eta(self, now: float) -> float | None:
        """The ETA counted down between steps, by at most one step's pace (a step that takes longer
        than the others leaves it waiting, not at 0:00); None until it is representative."""
        if self.eta_s is None or self.finished or self._step_time is None:
            return self.eta_s
        return max(0.0, self.eta_s - min(max(0.0, now - self._step_time), self._pace))

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    @property
    def has_cuda(self) -> bool:
        return len(self.vram_allocated) > 0

    @property
    def has_gpu_figures(self) -> bool:
        """NVML's utilisation, temperature or power came with the memory events."""
        return len(self.gpu_util) > 0 or self.gpu_temp is not None or self.gpu_power is not None

    def memory_gauge(self) -> tuple[str, int, int] | None:
        """(label, used, total) for the gauge: the GPU when there is one, else system RAM."""
        if self.has_cuda and self.device_total:
            used = self.device_used if self.device_used is not None else int(self.vram_reserved.last or 0)
            return ("VRAM", used, self.device_total)
        if self.ram_total and len(self.ram_used):
            return ("RAM", int(self.ram_used.last), self.ram_total)
        return None


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing slider):
    s_t = w·s_(t-1) + (1-w)·x_t, divided by 1 - w^t so the first points are not pulled to 0."""
    if weight <= 0:
        return list(values)
    out, s = [], 0.0
    for t, x in enumerate(values, start=1):
        s = weight * s + (1 - weight) * x
        out.append(s / (1 - weight ** t))
    return out





KERNEL_WORDS = {"fused-lora": "fused LoRA", "liger": "Liger", "grouped-experts": "grouped experts"}


def mode_words(memory_mode: str, kernels: list) -> str:
    """How a run trains, for the status line: "memory mode lean · fused LoRA + Liger"."""
    if not memory_mode:
        return ""
    text = f"memory mode {memory_mode}"
    if kernels:
        text += " · " + " + ".join(KERNEL_WORDS.get(k, k) for k in kernels)
    return text
