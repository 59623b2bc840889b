"""A process that takes a folder's lock and holds it until killed: `python lock_holder.py FOLDER
[LOCK_FILE]` prints "locked" once it holds it."""
import sys
import time
from pathlib import Path

from lorastudio.core.runs.locks import acquire

folder = Path(sys.argv[1])
acquire(folder, "holding it for a test", Path(sys.argv[2]) if len(sys.argv) > 2 else None)
print("locked", flush=True)
while True:
    time.sleep(1)
