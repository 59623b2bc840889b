#!/usr/bin/env bash
# Install LoRA Studio's menu entry, icons and AppStream metadata for the current user.
# Needs `lorastudio` on PATH (e.g. the bundle's launcher, or a venv's bin directory).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
icons=$here/../../resources/icons
data=${XDG_DATA_HOME:-$HOME/.local/share}
install -Dm644 "$here/io.github.lorastudio.LoRAStudio.desktop" "$data/applications/io.github.lorastudio.LoRAStudio.desktop"
install -Dm644 "$here/io.github.lorastudio.LoRAStudio.metainfo.xml" "$data/metainfo/io.github.lorastudio.LoRAStudio.metainfo.xml"
install -Dm644 "$icons/lorastudio.svg" "$data/icons/hicolor/scalable/apps/lorastudio.svg"
for png in "$icons"/hicolor/*/lorastudio.png; do
  size=$(basename "$(dirname "$png")")
  install -Dm644 "$png" "$data/icons/hicolor/$size/apps/lorastudio.png"
done
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$data/icons/hicolor" || true
echo "Installed LoRA Studio's menu entry under $data"
