"""The one job runtime (torch-free): start a job process, follow its journal, run a job's body.

    launcher.py  `launch(verb, job_dir, spec)` → JobHandle: job folder, job.yaml, the process
    follower.py  `follow(handle)` → Outcome: the journal until `end`, or the process's death in words
    worker.py    `run_job(job_dir, body)`: the skeleton every job process runs (signals, journal, end)
    failures.py  `classify(exc)`: any exception → (kind, message, hint) a user can act on

Every process the app starts is `python -m lorastudio.core.jobs.<verb> JOB_DIR [args]`; the window
wraps the same handle in one QObject (app/job_process.py).
"""
