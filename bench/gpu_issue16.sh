#!/usr/bin/env bash
# Issue 16 on one lent GPU (an H200), as one command: batched XTTS-v2 / VITS synthesis at batch 1, 8, 32, 64 with 1
# and 2 actors per GPU, the GPT step alone (eager, static, torch.compile, CUDA graphs), the greedy-code match to
# batch 1, Whisper verification, and the GPU-hours for 60,000 h. About 8 minutes. Writes the JSON and the log to
# bench/results/ and, on the device tool, to $OUT (what comes back).
#
# Beforehand, here (with network):  bash bench/gpu_wheels.sh        # .whl/: what the H200 image lacks (~8 MB)
# Then through the device tool:     run(command="bash bench/gpu_issue16.sh", carry=[".whl"], timeout_s=600)
# The device tool sends the checkout its session started in: run it from a tree that holds this branch.
# On any CUDA machine with the project installed (pip install -e .[gpu]) the wheels are not needed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed"; exit 1; }
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
python3 - <<'PY' || exit 1
import importlib.util, sys
missing = [m for m in ("torch", "TTS", "pydantic", "soundfile", "soxr", "transformers") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {missing}; run bench/gpu_wheels.sh here and carry .whl")
import torch
if not torch.cuda.is_available():
    sys.exit("no CUDA device")
print(torch.__version__, torch.cuda.get_device_name(0))
PY
stamp=$(date -u +%Y-%m-%d-%H%M)
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())")
json=bench/results/gpu-$gpu-$stamp-batched.json
log=bench/results/gpu-$gpu-$stamp-batched.log
mkdir -p bench/results
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$log"
timeout 570 python3 bench/gpu_bench.py --device cuda --size full --tts-batches 1,8,32,64 --actors 1,2 --seconds 10 \
  --tts-window 2 --asr-batches 64 --asr-clips 128 --json "$json" 2>&1 | grep -v "^\[transformers\]" | tee -a "$log"
status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then cp "$json" "$log" "$OUT"/ 2>/dev/null; fi
exit "$status"
