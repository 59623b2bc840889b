# Source on the GPU machine, from the repository root: makes `lorastudio` importable from this
# checkout without installing it, and puts the peers' folder (.peers, built by
# ../shared/peers/make_unsloth_site.sh and carried along) on the path when it is there.
#   source tests/bench/gpu_env.sh
mkdir -p /tmp/lorastudio-path/lorastudio
ln -sfn "$PWD/core" /tmp/lorastudio-path/lorastudio/core
ln -sfn "$PWD/app" /tmp/lorastudio-path/lorastudio/app
ln -sfn "$PWD/resources" /tmp/lorastudio-path/lorastudio/resources
export PYTHONPATH="/tmp/lorastudio-path:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .peers ]; then export PYTHONPATH="$PYTHONPATH:$PWD/.peers"; fi
export HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
