"""A process that saves an adapter-shaped folder in a loop (through core.atomic_files.atomic_dir)
until it is killed: `python atomic_saver.py TARGET [fallback]`. Each version's files carry its
number, so a test can tell a whole folder from a mixed or half-written one."""
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from lorastudio.core import atomic_files

target = Path(sys.argv[1])
if len(sys.argv) > 2 and sys.argv[2] == "fallback":
    atomic_files._EXCHANGE["off"] = True         # the two-rename path and its recovery
version = int(json.loads((target / "adapter_config.json").read_text())["version"]) if target.exists() else 0
print("ready", flush=True)
while True:
    version += 1
    with atomic_files.atomic_dir(target) as tmp:
        (tmp / "adapter_config.json").write_text(json.dumps({"version": version, "r": 8}))
        save_file({"lora_A": np.full((64, 512), version, dtype=np.float32)}, str(tmp / "adapter_model.safetensors"),
                  metadata={"version": str(version)})
