"""Issue 27's hostile sweep: 40+ cases, each through the real CLI (`python -m lorastudio.app.launcher`,
a fresh process), each classified

  lost   a file or folder the user had (a model, a run, their own folder) changed or went
  wrong  the command did what it should not (exit 0 where it must refuse, a refusal where it must work,
         a hostile pickle's code ran)
  raw    a traceback, or a refusal without words (no `error` line)
  clear  refused in words (error + what to do), or done as asked

    .venv/bin/python tests/bench/hostile_sweep.py [--keep DIR] [--only NAME]

Prints one line a case and the tally; exit 1 unless 0 lost and 0 wrong. CPU only, a few minutes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))


@dataclass
class Case:
    name: str
    setup: Callable[["World", Path], list]          # -> the CLI's arguments
    expect: str = "refuse"                          # refuse | ok
    words: str = ""                                 # what a clear answer says (a substring), if anything
    precious: Callable[["World", Path], list] = lambda w, d: []     # paths that must not change
    check: Callable[["World", Path], str | None] = lambda w, d: None   # extra: "why it is wrong", or None
    timeout: float = 120


@dataclass
class World:
    root: Path
    home: Path
    model: Path
    data: Path
    run: Path                                       # the shared trained run (copied by cases that change it)
    notes: dict = field(default_factory=dict)

    def run_copy(self, d: Path, name: str = "run") -> Path:
        copy = d / name
        shutil.copytree(self.run, copy)
        return copy

    def model_copy(self, d: Path, name: str = "model") -> Path:
        return Path(shutil.copytree(self.model, d / name))

    def fresh_run(self, d: Path) -> Path:
        """A run of its own (its own data file), trained in a process of its own (which lets its lock go)."""
        code = ("import sys; from pathlib import Path; sys.path[:0] = [sys.argv[3], sys.argv[4]]\n"
                "from tests.helpers.tiny_models import train_tiny_run, write_text_jsonl\n"
                "d = Path(sys.argv[1]); data = write_text_jsonl(d / 'data.jsonl', 32)\n"
                "train_tiny_run(d / 'own-run', Path(sys.argv[2]), data, quantization='none')\n")
        subprocess.run([sys.executable, "-c", code, str(d), str(self.model), str(ROOT.parent), str(ROOT)],
                       check=True, capture_output=True, env={**os.environ, "LORASTUDIO_HOME": str(self.home)})
        return d / "own-run"


def snapshot(paths: list[Path]) -> dict:
    found = {}
    for top in paths:
        top = Path(top)
        if not top.exists():
            found[str(top)] = "absent"
            continue
        for p in [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]:
            found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return found


def lorastudio(world: World, args: list, timeout: float) -> tuple[int, str]:
    env = {**os.environ, "LORASTUDIO_HOME": str(world.home), "PYTHONPATH": str(ROOT.parent)}
    env.pop("LORASTUDIO_ALLOW_PICKLE", None)
    proc = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", *map(str, args)], env=env,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", errors="replace")


def classify(case: Case, code: int, text: str, lost: list, wrong: str | None) -> tuple[str, str]:
    if lost:
        return "lost", f"changed: {lost[:2]}"
    if wrong:
        return "wrong", wrong
    if "Traceback" in text:
        return "raw", text.strip().splitlines()[-1][:160]
    if case.expect == "refuse":
        if code == 0:
            return "wrong", "exit 0 where it must refuse"
        if "error" not in text.lower():
            return "raw", f"exit {code} without an error line"
        if case.words and case.words not in text:
            return "raw", f"refused, but not in the words expected ({case.words!r})"
        return "clear", next((line for line in text.splitlines() if line.startswith("error")), "")[:160]
    if code != 0:
        return "wrong", f"exit {code} where it must work: " + text.strip().splitlines()[-1][:120]
    if case.words and case.words not in text:
        return "wrong", f"done, but without {case.words!r}"
    return "clear", "done"


# ---- the cases ---------------------------------------------------------------------------------
def _set(path: Path, edit: Callable[[dict], None]) -> None:
    import yaml
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw))


def _config(world: World, d: Path, **overrides) -> Path:
    from tests.helpers.tiny_models import write_config
    return write_config(d / "c.yaml", world.model, world.data, **overrides)


def _hostile_checkpoint(world: World, d: Path) -> list:
    import pickle

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch '{d / 'PWNED'}'",))
    run = world.run_copy(d)
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    for name in ("trainer_state.safetensors", "trainer_state.json"):
        (ckpt / name).unlink()
    (ckpt / "trainer_state.pt").write_bytes(pickle.dumps({"optimizer": Hostile()}))
    return ["resume", run]


def _garbage_state(world: World, d: Path) -> list:
    run = world.run_copy(d)
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    for name in ("trainer_state.safetensors", "trainer_state.json"):
        (ckpt / name).unlink()
    (ckpt / "trainer_state.pt").write_bytes(os.urandom(2048))
    return ["resume", run]


def _deaf_model(world: World, d: Path) -> list:
    from safetensors.torch import load_file, save_file
    model = world.model_copy(d, "deaf")
    for path in model.glob("*.safetensors"):
        tensors = load_file(path)
        save_file({k: (v.zero_() if "o_proj" in k else v) for k, v in tensors.items()}, path, metadata={"format": "pt"})
    from tests.helpers.tiny_models import write_config
    return ["train", write_config(d / "c.yaml", model, world.data, training__max_steps=40, training__save_every=0,
                                  training__seq_len=32), "--run-dir", d / "r"]


def _spoil(world: World, d: Path, name: str, data: bytes | None) -> Path:
    run = world.run_copy(d)
    target = run / name
    if target.exists():
        target.unlink() if target.is_file() else shutil.rmtree(target)
    if data is None:
        target.mkdir()
    else:
        target.write_bytes(data)
    return run


def _runs_listing(world: World, d: Path, name: str, data: bytes | None) -> list:
    runs = d / "runs"
    runs.mkdir()
    shutil.copytree(world.run, runs / "good")
    bad = _spoil(world, d, name, data)
    bad.rename(runs / "bad")
    return ["runs", "--runs-dir", runs]


def _changed_data(world: World, d: Path) -> list:
    run = world.fresh_run(d)
    data = d / "data.jsonl"
    data.write_text(data.read_text().replace("a", "o"))
    return ["resume", run]


def _edited(world: World, d: Path, edit: Callable[[dict], None]) -> list:
    run = world.run_copy(d)
    _set(run / "config.yaml", edit)
    return ["resume", run]


def _newer_journal(world: World, d: Path) -> list:
    run = world.run_copy(d)
    with open(run / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"v": 3, "type": "phase", "time": time.time(), "name": "future", "x": {}}) + "\n")
    world.notes["journal"] = (run / "events.jsonl").read_bytes()
    return ["resume", run]


def _unmarked(d: Path) -> Path:
    folder = d / "my-notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    return folder


def _export_twice(world: World, d: Path) -> list:
    env = {**os.environ, "LORASTUDIO_HOME": str(world.home), "PYTHONPATH": str(ROOT.parent)}
    subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", "export", str(world.run), str(d / "out")],
                   env=env, capture_output=True, check=True)
    return ["export", world.run, d / "out", "--overwrite"]


def _model_symlink(world: World, d: Path) -> list:
    model = world.model_copy(d)
    (d / "link").symlink_to(model)
    return ["merge", world.run, d / "link", "--overwrite", "--device", "cpu"]


def _pwned(world: World, d: Path) -> str | None:
    return "the hostile pickle ran" if (d / "PWNED").exists() else None


def _journal_untouched(world: World, d: Path) -> str | None:
    return None if (d / "run" / "events.jsonl").read_bytes() == world.notes.get("journal") else \
        "lines were appended to a newer journal"


def cases() -> list[Case]:
    m = lambda w, d: [d / "model"]                                          # noqa: E731
    c = []
    # 1. output paths (none of these is the example: resize over the base, export-gguf into it)
    c += [Case("export over a model folder", lambda w, d: ["export", w.run, w.model_copy(d), "--overwrite"], precious=m,
               words="is a model folder"),
          Case("export over another run", lambda w, d: ["export", w.run, w.run_copy(d, "other"), "--overwrite"],
               precious=lambda w, d: [d / "other"], words="run folder"),
          Case("merge over an adapter copy", lambda w, d: ["merge", w.run, Path(shutil.copytree(w.run / "adapter", d / "ad")),
                                                          "--overwrite", "--device", "cpu"],
               precious=lambda w, d: [d / "ad"], words="adapter folder"),
          Case("merge over a folder holding a model", lambda w, d: ["merge", w.run, (w.model_copy(d / "box" / "deep"), d / "box")[1],
                                                                    "--overwrite", "--device", "cpu"],
               precious=lambda w, d: [d / "box"], words="contains a model folder"),
          Case("resize into another run", lambda w, d: ["resize", w.run, w.run_copy(d, "other") / "small", "--rank", "2"],
               precious=lambda w, d: [d / "other"], words="run folder"),
          Case("resize over DATA/runs", lambda w, d: ["resize", w.run, (w.home / "runs").resolve(), "--rank", "2", "--overwrite"],
               precious=lambda w, d: [w.home / "runs"]),
          Case("export-gguf into a model folder", lambda w, d: ["export-gguf", w.run, w.model_copy(d) / "x.gguf", "--adapter-only"],
               precious=m, words="model folder"),
          Case("export-gguf into an adapter copy", lambda w, d: ["export-gguf", w.run,
                                                                 Path(shutil.copytree(w.run / "adapter", d / "ad")) / "x.gguf",
                                                                 "--adapter-only"],
               precious=lambda w, d: [d / "ad"], words="adapter folder"),
          Case("tensorboard --out a model folder", lambda w, d: ["tensorboard", w.run, "--out", w.model_copy(d)],
               precious=m, words="model folder"),
          Case("export --overwrite over the user's own folder", lambda w, d: ["export", w.run, _unmarked(d), "--overwrite"],
               precious=lambda w, d: [d / "my-notes"], words="was not written by LoRA Studio"),
          Case("export --overwrite over its own earlier export", _export_twice, expect="ok"),
          Case("export over the data directory", lambda w, d: ["export", w.run, w.home, "--overwrite"],
               precious=lambda w, d: [w.home / "runs"], words="data directory"),
          Case("export --zip into a model folder", lambda w, d: ["export", w.run, w.model_copy(d) / "a.zip", "--zip"],
               precious=m, words="model folder"),
          Case("merge into the data directory", lambda w, d: ["merge", w.run, w.home / "merged", "--device", "cpu"],
               words="data directory"),
          Case("merge through a symlink to a model", _model_symlink, precious=m, words="model folder")]
    # 2. pickles
    c += [Case("resume a checkpoint whose state is a hostile pickle", _hostile_checkpoint, check=_pwned,
               words="LORASTUDIO_ALLOW_PICKLE"),
          Case("resume a checkpoint whose state is random bytes", _garbage_state, words="was not loaded")]
    # 4. settings that make nothing happen
    for key, value, section in (("r", 10**6, "lora"), ("seq_len", 10**9, "training"), ("max_steps", 10**12, "training"),
                                ("weight_decay", 1e6, "training"), ("processes", 10**6, "distributed"),
                                ("epochs", 1e9, "training"), ("max_grad_norm", 1e30, "training"),
                                ("warmup_steps", 10**13, "training"), ("seed", 2**40, "training"),
                                ("log_every", 10**12, "training")):
        c.append(Case(f"train with {section}.{key}={value:g}",
                      lambda w, d, k=key, v=value, s=section: ["train", _config(w, d, **{f"{s}__{k}": v}), "--run-dir", d / "r"],
                      words="at most"))
    c.append(Case("train with lora.alpha written as 'inf'", lambda w, d: ["train", _config(w, d, lora__alpha="inf"),
                                                                            "--run-dir", d / "r"], words="lora.alpha"))
    c.append(Case("train a model whose updates are all zero", _deaf_model, words="the adapter is not learning",
                  timeout=300))
    # 5. one bad file
    c += [Case("runs: one run's status.json is binary", lambda w, d: _runs_listing(w, d, "status.json", b"\x00\xff" * 64),
               expect="ok", words="good"),
          Case("runs: one run's config.yaml is a folder", lambda w, d: _runs_listing(w, d, "config.yaml", None),
               expect="ok", words="good"),
          Case("runs: one run's events.jsonl is a folder", lambda w, d: _runs_listing(w, d, "events.jsonl", None),
               expect="ok", words="good"),
          Case("resume: config.yaml not UTF-8", lambda w, d: ["resume", _spoil(w, d, "config.yaml", b"model: \xff\xfe\n")],
               words="UTF-8"),
          Case("resume: checkpoint state.json truncated", lambda w, d: ["resume", _spoil(
              w, d, f"checkpoints/{sorted(p.name for p in (w.run / 'checkpoints').iterdir())[-1]}/state.json", b'{"step": 4, "mi')],
               words="state.json"),
          Case("resume: events.jsonl is a folder", lambda w, d: ["resume", _spoil(w, d, "events.jsonl", None)],
               words="events.jsonl"),
          Case("export: journal with non-UTF-8 bytes", lambda w, d: ["export", _spoil(
              w, d, "events.jsonl", (w.run / "events.jsonl").read_bytes() + b"\xff\xfe{broken\n"), d / "out"], expect="ok"),
          Case("tensorboard: journal cut mid-line", lambda w, d: ["tensorboard", _spoil(
              w, d, "events.jsonl", (w.run / "events.jsonl").read_bytes()[:-17])], expect="ok")]
    # 6. resuming what changed
    c += [Case("resume a journal of version 3", _newer_journal, check=_journal_untouched, words="newer LoRA Studio"),
          Case("resume after the data file was rewritten", _changed_data, words="changed since checkpoint"),
          Case("resume after config.yaml's rank was edited", lambda w, d: _edited(w, d, lambda c: c["lora"].update(r=2)),
               words="does not match checkpoint"),
          Case("resume after config.yaml's targets were edited",
               lambda w, d: _edited(w, d, lambda c: c["lora"].update(targets=["k_proj"])), words="does not match checkpoint"),
          Case("resume after config.yaml turned DoRA on",
               lambda w, d: _edited(w, d, lambda c: c["lora"].update(use_dora=True)), words="does not match checkpoint"),
          Case("resume with --set lora.r=2", lambda w, d: ["resume", w.run_copy(d), "--set", "lora.r=2"],
               words="cannot change when resuming"),
          Case("resume with the data file gone", lambda w, d: (lambda r: (Path(d / "data.jsonl").unlink(), ["resume", r])[1])(
              w.fresh_run(d)))]
    # 3. run folders and workers
    c += [Case("train --run-dir a model folder", lambda w, d: ["train", _config(w, d), "--run-dir", w.model_copy(d)],
               precious=m),
          Case("train --run-dir an existing run", lambda w, d: ["train", _config(w, d), "--run-dir", w.run_copy(d, "other")],
               precious=lambda w, d: [d / "other"])]
    return c


def build_world(root: Path) -> World:
    from tests.helpers.tiny_models import make_tiny_model, train_tiny_run, write_text_jsonl
    home = root / "home"
    (home / "runs").mkdir(parents=True)
    model = make_tiny_model(root / "tiny-llama", "llama")
    data = write_text_jsonl(root / "train.jsonl", 32)
    run = train_tiny_run(root / "trained" / "run", model, data, quantization="none")
    return World(root, home, model, data, run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--only", help="run the cases whose name contains this")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="hostile-"))
    root.mkdir(parents=True, exist_ok=True)
    world = build_world(root)
    tally: dict[str, int] = {"lost": 0, "wrong": 0, "raw": 0, "clear": 0}
    chosen = [c for c in cases() if not args.only or args.only in c.name]
    for i, case in enumerate(chosen, 1):
        d = root / f"case-{i:02d}"
        d.mkdir()
        cli_args = case.setup(world, d)
        precious = case.precious(world, d)
        before = snapshot(precious)
        try:
            code, text = lorastudio(world, cli_args, case.timeout)
        except subprocess.TimeoutExpired:
            code, text = -1, "timed out"
        after = snapshot(precious)
        lost = [p for p in set(before) | set(after) if before.get(p) != after.get(p)]
        verdict, why = classify(case, code, text, lost, case.check(world, d))
        tally[verdict] += 1
        print(f"{i:2d} {verdict:5s} {case.name}: {why}", flush=True)
    total = sum(tally.values())
    print(f"\n{total} cases: {tally['lost']} lost, {tally['wrong']} wrong, {tally['raw']} raw, "
          f"{tally['clear']} clear ({100 * tally['clear'] / max(total, 1):.0f} % clear)")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if tally["lost"] == tally["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
