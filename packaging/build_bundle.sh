#!/usr/bin/env bash
# Build LoRA Studio's Linux bundle (launcher + wheel + desktop files), then smoke-test it:
# a fresh private environment is created through the launcher, the app starts offscreen, the
# main window must appear, and the app must exit cleanly.
#   bash packaging/build_bundle.sh [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/dist/LoRAStudio}
start=$(date +%s)
rm -rf "$out"
mkdir -p "$out/wheels"
python3 -m pip wheel -q --no-deps -w "$out/wheels" "$root"
install -m755 "$root/packaging/lorastudio-launcher.sh" "$out/lorastudio"
install -m644 "$root/packaging/smoke_test.py" "$out/smoke_test.py"
mkdir -p "$out/desktop/linux" "$out/resources"
cp "$root"/packaging/linux/* "$out/desktop/linux/"
cp -r "$root/resources/icons" "$out/resources/icons"
built=$(date +%s)
echo "Built $out in $((built - start)) s ($(du -sh "$out" | cut -f1))"
smoke_env=$(mktemp -d)/env
LORASTUDIO_ENV=$smoke_env QT_QPA_PLATFORM=offscreen "$out/lorastudio" --smoke-test
echo "Smoke test passed in $(( $(date +%s) - built )) s; private environment: $(du -sh "$smoke_env" | cut -f1)"
rm -rf "$(dirname "$smoke_env")"
