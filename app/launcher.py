"""The `lorastudio` entry point: no arguments opens the window, a subcommand runs the CLI.

Kept tiny and torch-free: the CLI and the window both hand heavy work to worker processes.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["--version"], ["-V"]):          # answered from package metadata, nothing imported
        from lorastudio.core import package_version
        print(f"lorastudio {package_version()}")
        return 0
    if argv:
        from lorastudio.core.cli import main as cli_main
        return cli_main(argv)
    from lorastudio.app.system_check import window_problem     # before Qt: it aborts where we explain
    problem = window_problem()
    if problem:
        print(problem, file=sys.stderr, flush=True)
        return 1
    from lorastudio.app.application import run
    return run()


if __name__ == "__main__":
    sys.exit(main())
