"""Each job's plan: its typed request, the checks that come before anything loads, and its one
starter `start_<verb>(request) -> JobHandle` (core/runtime/jobs.py lists the jobs). Torch-free:
the CLI and the window start jobs only through these modules."""
