"""The training loop. An explicit loop rather than transformers' Trainer, because we need:
  * a journal line per step with tokens/s, memory and ETA, written by us, in our schema;
  * a graceful stop between any two steps (signal -> checkpoint + adapter -> `end`);
  * exact resume: the data order is a pure function of (seed, epoch), so a checkpoint stores the
    micro-batch index k, and optimizer, scheduler and RNG states — nothing else to reconstruct;
  * one place that owns precision and memory (model_loading), with no hidden accelerate wrapping.
Loss under gradient accumulation is the mean over every trained token of the whole step: each
micro-batch passes `num_items_in_batch` (the step's token count), so its loss is sum / N.
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Callable

import torch

from lorastudio.core.engine import checkpoint_state as ckpt
from lorastudio.core.engine import distributed as dist_
from lorastudio.core.config import RunConfig
from lorastudio.core.errors import UserError
from lorastudio.core.engine.batches import PreparedData, count_label_tokens, count_real_tokens, prepare_data
from lorastudio.core.devices import GpuStatus, gpu_status_by_uuid, host_memory
from lorastudio.core.journal import JournalWriter
from lorastudio.core.atomic_files import atomic_dir
from lorastudio.core.disk import check_room, writing
from lorastudio.core.models.info import ModelInfo
from lorastudio.core.engine.model_loading import LoadedModel, load_for_training, trainable_parameters
from lorastudio.core.engine.objectives import make_objective
from lorastudio.core.runs.folders import ADAPTER_DIR, CHECKPOINTS_DIR
from lorastudio.core.runs.checkpoints import DATA_KEY, data_fingerprint
from lorastudio.core.runtime import faults


MEMORY_EVERY_S = 2.0      # memory events at most this often (and at the first and last step)
NOT_LEARNING_STEPS = 25   # this many steps in a row with a zero or non-finite update: stop (issue 27)
EVAL_PROGRESS_S = 1.0     # evaluation progress (phase evaluating) at most this often, after its first batch


class NotLearning(UserError):
    """The updates stayed zero or non-finite for NOT_LEARNING_STEPS steps: the adapter learns nothing."""
    kind = "not_learning"


class StopMidStep(Exception):
    """A stop asked for while a step's micro-batches run: its gradients are dropped and the run
    stops at the last finished step (a long step on a CPU no longer holds a stop for minutes)."""


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def map_data_position(micro: int, old_batch: int, old_per_epoch: int, new_batch: int, new_per_epoch: int) -> int:
    """Micro-batch index k under a new batch size, for a resume with changed settings.

    The order within an epoch does not depend on the batch size, so what counts is how many
    examples of the current epoch were seen: pos × old_batch. Rounding down re-trains at most
    new_batch - 1 examples rather than skipping any (4 → 2: position 6 of epoch 1 = 24 examples
    seen = position 12)."""
    epoch, pos = divmod(micro, old_per_epoch)
    return epoch * new_per_epoch + (pos * old_batch) // new_batch


def total_steps(config: RunConfig, micro_per_epoch: int) -> int:
    t = config.training
    if t.max_steps:
        return t.max_steps
    return max(1, math.ceil(t.epochs * micro_per_epoch / t.grad_accum))


def packing_words(summary: dict) -> str:
    """The data's packing and token cache in the log's words: what they mean for the run, not their
    measurements (the `data` event keeps the check's figures and the cache's path)."""
    note = re.sub(r"\s*\(difference [^)]*\)", "", summary.get("packing_note") or "")
    packing = {"on": f"Packing on: {note} (several examples share a row, without padding)",
               "off": f"Packing off: {note}" if note else "Packing off: each example padded to the longest in its batch",
               }.get(summary["packing"], f"Packing fallback: {note}; batches are padded instead")
    cache = ("the tokenized examples came from the cache (this data and these settings were tokenized before)"
             if summary.get("cache_hit") else "the examples were tokenized and cached for the next run on this data")
    return f"{packing}; {cache}"


class Trainer:
    def __init__(self, config: RunConfig, info: ModelInfo, run_dir: Path, journal: JournalWriter,
                 should_stop: Callable[[], bool] = lambda: False, ranks: dist_.Ranks = dist_.SINGLE):
        self.config, self.info, self.run_dir, self.journal = config, info, Path(run_dir), journal
        self.should_stop = should_stop
        self.ranks = ranks       # several processes (core/engine/distributed.py): only rank 0 writes
        self.global_batch = config.training.batch_size * ranks.world     # micro-batch k's examples
        self.step = 0            # optimizer steps done
        self.micro = 0           # micro-batches consumed (the data position)
        self.last_loss = float("nan")
        self.objective = make_objective(config.training)     # what a step minimises (sft, dpo, orpo)

    # ---- set-up ---------------------------------------------------------------------------
    def setup(self, resume_from: Path | None = None) -> None:
        t = self.config.training
        self.journal.emit("phase", name="loading", message=f"Loading {self.info.architecture} "
                          f"({self.config.quantization})")
        self.loaded: LoadedModel = load_for_training(self.config, self.info)
        for note in self.loaded.notes:
            self.journal.emit("log", level="info", message=note)
        self.model = self.loaded.model
        self.device = self.loaded.device
        self.journal.emit("phase", name="data", message="Tokenizing the data")
        prepare = self.objective.prepare_data if self.objective.pairs else self.prepare_supervised
        if not self.ranks.main:
            dist_.barrier(self.ranks)       # rank 0 builds the token cache; the others then read it
        self.data: PreparedData = prepare(self.config.data, self.loaded.tokenizer, t.seq_len,
                                               self.global_batch, t.seed)
        if self.ranks.main:
            dist_.barrier(self.ranks)
        self.report_data(t.seq_len)
        self.total = total_steps(self.config, self.data.train.per_epoch)
        self.params = params = trainable_parameters(self.model)
        self.optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay,
                                           fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, t.warmup_steps, self.total, t.schedule))
        fp16 = self.loaded.compute_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16 else None
        if resume_from is not None:
            self.restore(resume_from)

    def restore(self, resume_from: Path) -> None:
        """Load a checkpoint; map the data position and lr schedule if the settings changed since."""
        t = self.config.training
        state = ckpt.load_checkpoint(resume_from, self.model, self.optimizer, self.scheduler, self.scaler)
        self.step, self.micro = state["step"], state["micro_batch"]
        old_batch = state.get("batch_size", t.batch_size)       # the global micro-batch (all ranks)
        if old_batch != self.global_batch:
            old_per_epoch = state.get("per_epoch") or -(-self.data.examples // old_batch)
            self.micro = map_data_position(self.micro, old_batch, old_per_epoch, self.global_batch,
                                           self.data.train.per_epoch)
            self.journal.emit("log", level="info", message=f"batch_size {old_batch} → {self.global_batch}: "
                              f"data position {state['micro_batch']} → {self.micro} (micro-batches)")
        if state.get("total_steps", self.total) != self.total or self.scheduler.base_lrs[0] != t.lr:
            self.scheduler.base_lrs = [t.lr] * len(self.optimizer.param_groups)
            for group in self.optimizer.param_groups:
                group["initial_lr"] = t.lr
                group["lr"] = t.lr * lr_factor(self.step, t.warmup_steps, self.total, t.schedule)
        self.journal.emit("log", level="info", message=f"Resumed from {resume_from} at step {self.step}")

    def prepare_supervised(self, data_cfg, tokenizer, seq_len: int, batch_size: int, seed: int) -> PreparedData:
        """batches.prepare_data with the model (to check packing) and progress in the journal."""
        def progress(fraction, message):
            self.journal.emit("phase", name="data", message=message,
                              **({"fraction": fraction} if fraction is not None else {}))
        return prepare_data(data_cfg, tokenizer, seq_len, batch_size, seed, model=self.model, progress=progress,
                            log=lambda m: self.journal.emit("log", level="warning", message=m),
                            processor=self.loaded.processor)

    def report_data(self, seq_len: int) -> None:
        summary = self.data.summary()
        self.journal.emit("data", **summary)
        self.journal.emit("log", level="info", message=f"Data: {summary['reason']}; {summary['examples']} "
                          f"training and {summary['validation_examples']} validation examples, "
                          f"{summary['trained_tokens']:,} of {summary['tokens']:,} tokens trained")
        for note in summary["notes"]:
            self.journal.emit("log", level="warning", message=f"Note: {note}")
        if "packing" in summary:          # supervised data: packing and the token cache
            self.journal.emit("log", level="warning" if summary["packing"] == "fallback" else "info",
                              message=packing_words(summary))
        counts = [(summary["truncated"], f"were longer than seq_len={seq_len} tokens and were truncated"),
                  (summary["dropped_too_long"], f"were longer than seq_len={seq_len} tokens and were dropped"),
                  (summary["dropped_no_target"], "had no token left to train on after masking and were dropped"),
                  (summary.get("dropped_empty_answer", 0), "had an empty assistant answer (completion), "
                   "which teaches nothing, and were dropped"),
                  (len(summary["bad_rows"]), "rows were bad and skipped: " + ", ".join(
                      f"{b['where']} ({b['problem']})" for b in summary["bad_rows"][:5]))]
        for n, what in counts:
            if n:
                self.journal.emit("log", level="warning", message=f"{n} training examples {what}")

    def start_event(self) -> None:
        import bitsandbytes
        import peft
        import transformers
        trainable = sum(p.numel() for p in trainable_parameters(self.model))
        devices = ([torch.cuda.get_device_name(self.device)] if self.device.type == "cuda" else ["cpu"])
        self.journal.emit(
            "start", config=self.config.to_dict(), devices=devices, total_steps=self.total,
            trainable_params=trainable, total_params=self.info.num_parameters + trainable,
            examples=self.data.examples, validation_examples=self.data.validation_examples,
            resumed_at=self.step, memory_mode=self.loaded.memory_mode, kernels=list(self.loaded.kernels),
            versions={"torch": torch.__version__, "transformers": transformers.__version__,
                      "peft": peft.__version__, "bitsandbytes": bitsandbytes.__version__})

    # ---- the loop -------------------------------------------------------------------------
    def train(self) -> str:
        """Train until done or asked to stop; returns 'completed' or 'stopped'."""
        t = self.config.training
        self.journal.emit("phase", name="training", message=f"Training {self.total} steps")
        if self.step == 0 and self.objective.pairs:
            self.evaluate()              # the base's own preferences: where the plots start
        self.model.train()
        if self.device.type == "cuda":       # the journal's peak is training's, not loading's
            torch.cuda.reset_peak_memory_stats(self.device)
        began, tokens_window, window_start = time.time(), 0, time.time()
        self.memory_time = 0.0
        first_step = self.step
        step_times: list[float] = []
        while self.step < self.total:
            if dist_.any_true(self.should_stop(), self.ranks, self.device):     # all ranks stop together
                return self.finish("stopped")
            t0 = time.time()
            try:
                loss, grad_norm, tokens = self.one_step()
            except StopMidStep:                 # Stop during a step: the last finished step is kept
                return self.finish("stopped")
            self.step += 1
            self.last_loss = loss
            self.check_learning(grad_norm)
            step_times.append(time.time() - t0)
            tokens_window += tokens
            if self.step % t.log_every == 0 or self.step == self.total:
                now = time.time()
                recent = step_times[-20:]
                eta = (self.total - self.step) * (sum(recent) / len(recent))
                if now - self.memory_time >= MEMORY_EVERY_S or self.step in (first_step + 1, self.total):
                    self.emit_memory()          # NVML and psutil cost milliseconds: not every step
                    self.memory_time = now
                self.journal.emit("step", step=self.step, total_steps=self.total,
                                  epoch=round(self.data.train.epoch_of(self.micro), 4), loss=loss,
                                  lr=self.scheduler.get_last_lr()[0], grad_norm=grad_norm,
                                  tokens_per_s=tokens_window / max(now - window_start, 1e-9),
                                  elapsed_s=now - began, eta_s=eta, steps_this_session=self.step - first_step,
                                  **self.objective.step_fields())
                tokens_window, window_start = 0, now
            if t.save_every and self.step % t.save_every == 0 and self.step < self.total:
                self.save_checkpoint()
            if self.should_eval():
                self.evaluate()
        return self.finish("completed")

    def check_learning(self, grad_norm: float | None) -> None:
        """Stop with words when the updates stay zero or non-finite (as divergence stops a run)."""
        if not self.config.training.max_grad_norm:
            return                          # no clipping, no norm measured: nothing to judge by
        dead = grad_norm is None or grad_norm == 0.0
        self.dead_steps = getattr(self, "dead_steps", 0) + 1 if dead else 0
        if self.dead_steps >= NOT_LEARNING_STEPS:
            what = "zero" if grad_norm == 0.0 else "not finite (overflow)"
            raise NotLearning(
                f"the adapter is not learning: the gradient norm was {what} for {self.dead_steps} steps in a row "
                f"(steps {self.step - self.dead_steps + 1}–{self.step}), so its weights did not change",
                "check lora.alpha (alpha/r scales every update; usual alpha = 2·r), training.lr, and that the "
                "examples have answers to learn (the data report's masked tokens); then train again")

    def one_step(self) -> tuple[float, float | None, int]:
        t = self.config.training
        batches, on_device, weights = self.step_batches(self.micro)
        self.objective.begin_step(batches)      # the step's token count: all ranks' (the global batch)
        tokens = sum(count_real_tokens(b) for b in batches)     # padding excluded, packed or not
        total_loss = torch.zeros((), device=self.device)   # summed on the device: one host sync a step
        for i, (batch, weight) in enumerate(zip(on_device, weights)):
            if i and not self.ranks.on and self.should_stop():      # Stop answers at the next micro-batch
                self.optimizer.zero_grad(set_to_none=True)          # the step is dropped, resumed whole
                self.prefetched = None
                raise StopMidStep()
            loss = self.objective.loss(self.model, batch) * weight
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            total_loss += loss.detach().float()
        self.micro += t.grad_accum
        dist_.sum_gradients(self.params, self.ranks)        # several processes: the 1-process gradient
        total_loss = dist_.sum_value(total_loss, self.ranks)
        grad_norm = None
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, t.max_grad_norm) if t.max_grad_norm else None
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.step + 1 < self.total:      # the next step's batches go out while this one computes
            self.prefetched = (self.micro, self.step_batches(self.micro))
        # The one host sync of the step, after everything is queued (the GPU never waits for us).
        if norm is not None:
            total_loss, grad_norm = torch.stack([total_loss, norm.float().to(self.device)]).tolist()
        else:
            total_loss = float(total_loss)
        if not math.isfinite(total_loss):
            raise FloatingPointError(f"the loss became {total_loss} at step {self.step + 1}")
        return total_loss, grad_norm if grad_norm is None or math.isfinite(grad_norm) else None, tokens

    def step_batches(self, micro: int) -> tuple[list, list[dict], list[float]]:
        """The step's micro-batches starting at `micro`, this rank's share of them on the device
        (from pinned memory, so the copies do not wait for the GPU's queue to drain), and each
        share's loss weight (0 for a rank left without rows: it only takes part)."""
        ready = getattr(self, "prefetched", None)
        if ready is not None and ready[0] == micro:
            self.prefetched = None
            return ready[1]
        batches = [self.data.train.batch(micro + i) for i in range(self.config.training.grad_accum)]
        shares, weights = batches, [1.0] * len(batches)
        if self.ranks.on:
            train = self.data.train
            split = [dist_.rank_rows([train.data.items[i] for i in train.indices(micro + j)], self.ranks)
                     for j in range(len(batches))]
            shares = [train.collate(rows) for rows, _real in split]
            weights = [1.0 if real else 0.0 for _rows, real in split]
        pin = self.device.type == "cuda"
        return batches, [{k: (v.pin_memory() if pin else v).to(self.device, non_blocking=True)
                          for k, v in b.items()} for b in shares], weights

    def should_eval(self) -> bool:
        t = self.config.training
        if self.data.validation is None or self.step >= self.total:
            return False
        every = t.eval_every or t.save_every
        return bool(every) and self.step % every == 0

    @torch.no_grad()
    def evaluate(self) -> float | None:
        if self.data.validation is None:
            return None
        if self.objective.pairs:
            return self.evaluate_pairs()
        self.model.eval()
        rows, bs = self.data.validation.items, self.config.training.batch_size
        loss_sum, count = 0.0, 0
        batches = -(-len(rows) // bs)
        for i in range(0, len(rows), bs):
            self.evaluation_progress(i // bs, batches, len(rows))
            batch = self.data.collate(rows[i:i + bs])            # packed like training batches
            n = count_label_tokens(batch)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out = self.model(**batch, num_items_in_batch=n)
            loss_sum += float(out.loss) * n
            count += n
        self.model.train()
        loss = loss_sum / max(count, 1)
        self.journal.emit("eval", step=self.step, loss=loss, tokens=count)
        return loss

    def evaluation_progress(self, done: int, batches: int, examples: int) -> None:
        """A `phase` event (evaluating, fraction) before each held-out batch — at most every
        EVAL_PROGRESS_S after the first — so the window and the CLI show an evaluation moving."""
        now = time.monotonic()
        if done and now - getattr(self, "_eval_progress_at", 0.0) < EVAL_PROGRESS_S:
            return
        self._eval_progress_at = now
        self.journal.emit("phase", name="evaluating", fraction=round(done / max(batches, 1), 4), step=self.step,
                          message=f"Evaluating at step {self.step}: batch {done + 1} of {batches} "
                                  f"({examples:,} held-out examples)")

    def evaluate_pairs(self) -> float:
        """Held-out pairs: loss, margin, accuracy and log-probabilities (the eval event)."""
        fields = self.objective.evaluate(self.model, self.data.validation, self.config.training.batch_size,
                                         self.data.train.pad_id, self.device)
        self.journal.emit("eval", step=self.step, **fields)
        return fields["loss"]

    # ---- memory, checkpoints, the end ------------------------------------------------------
    def emit_memory(self) -> None:
        fields = host_memory()
        if self.device.type == "cuda":
            fields.update(cuda_allocated=torch.cuda.memory_allocated(self.device),
                          cuda_reserved=torch.cuda.memory_reserved(self.device),
                          cuda_peak=torch.cuda.max_memory_allocated(self.device),
                          device_name=torch.cuda.get_device_name(self.device))
            props = torch.cuda.get_device_properties(self.device)
            status = gpu_status_by_uuid(str(getattr(props, "uuid", "")))    # memory, utilisation, °C, W
            if status is None:          # no NVML: the driver's view of memory through CUDA itself
                free, total = torch.cuda.mem_get_info(self.device)
                status = GpuStatus(total - free, total)
            fields.update(status.event_fields())
        self.journal.emit("memory", step=self.step, **fields)

    def save_checkpoint(self) -> Path | None:
        if not self.ranks.main:
            return None
        root = self.run_dir / CHECKPOINTS_DIR
        path = ckpt.save_checkpoint(root, self.step, self.model, self.optimizer, self.scheduler,
                                    self.scaler, {"micro_batch": self.micro, "loss": self.last_loss,
                                                  "total_steps": self.total,
                                                  "batch_size": self.global_batch,
                                                  "per_epoch": self.data.train.per_epoch,
                                                  DATA_KEY: data_fingerprint(self.config.data)})
        self.journal.emit("checkpoint", step=self.step, path=str(path))
        for old in ckpt.prune_checkpoints(root, self.config.training.keep_checkpoints):
            self.journal.emit("log", level="info", message=f"Removed old checkpoint {old.name}")
        return path

    def save_adapter(self) -> Path:
        target = self.run_dir / ADAPTER_DIR
        need = ckpt.adapter_bytes(self.model) + sum(p.stat().st_size for p in self.info.path.glob("tokenizer*"))
        check_room(self.run_dir, need, "the adapter", "the checkpoints are intact")
        with writing("the adapter", self.run_dir, need, "the checkpoints are intact"), atomic_dir(target) as tmp:
            self.model.save_pretrained(tmp)
            (self.loaded.processor or self.loaded.tokenizer).save_pretrained(tmp)   # a VLM's: its image settings too
        return target

    def finish(self, status: str) -> str:
        if self.step == 0:
            return status               # nothing trained: no adapter to save
        self.journal.emit("phase", name="saving", message="Saving the checkpoint and the adapter")
        if status == "stopped" or self.config.training.save_every:
            self.save_checkpoint()
        if status == "completed":
            self.evaluate()
        if self.ranks.main:
            self.adapter_path = self.save_adapter()
        return status


def build_trainer(config: RunConfig, info: ModelInfo, run_dir: Path, journal: JournalWriter,
                  should_stop: Callable[[], bool], ranks: dist_.Ranks = dist_.SINGLE) -> Trainer:
    """The one place a training job builds its Trainer (every attempt, every rank): `should_stop`
    is asked before each optimizer step. Test faults (core/runtime/faults.py) are armed here and
    only here; outside the tests that hook does nothing."""
    trainer = Trainer(config, info, run_dir, journal, should_stop=should_stop, ranks=ranks)
    faults.arm(trainer, ranks.rank, oom_error=torch.OutOfMemoryError)
    return trainer
