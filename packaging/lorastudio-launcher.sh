#!/usr/bin/env bash
# LoRA Studio's launcher. On first start it creates a private environment with the torch build
# that fits this machine (CUDA wheels when an NVIDIA driver answers, CPU wheels otherwise), installs
# the bundled LoRA Studio wheel into it, then starts the app. Later starts go straight to the app.
#   LORASTUDIO_ENV    where the environment lives (default: ~/.local/share/lorastudio/env)
#   LORASTUDIO_TORCH  pip arguments for torch, to override the choice (e.g. "torch==2.13.0")
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
env_dir=${LORASTUDIO_ENV:-${XDG_DATA_HOME:-$HOME/.local/share}/lorastudio/env}
wheel=$(ls "$here"/wheels/lorastudio-*.whl | head -n 1)
stamp="$env_dir/.installed-$(basename "$wheel")"
if [ ! -f "$stamp" ]; then
  echo "LoRA Studio: preparing its environment in $env_dir (first start only, a few minutes)…" >&2
  python3 -m venv "$env_dir"
  "$env_dir/bin/python" -m pip install -q --upgrade pip
  if [ -n "${LORASTUDIO_TORCH:-}" ]; then
    read -r -a torch_spec <<< "$LORASTUDIO_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    torch_spec=(torch)                     # PyPI's Linux torch wheels carry CUDA
  else
    torch_spec=(torch --index-url https://download.pytorch.org/whl/cpu)
  fi
  "$env_dir/bin/python" -m pip install -q "${torch_spec[@]}"
  "$env_dir/bin/python" -m pip install -q "$wheel"
  touch "$stamp"
fi
if [ "${1:-}" = "--smoke-test" ]; then
  exec "$env_dir/bin/python" "$here/smoke_test.py"
fi
exec "$env_dir/bin/lorastudio" "$@"
