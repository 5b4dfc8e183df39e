#!/usr/bin/env bash
# Fetch, on a machine with network, the wheels that bench/gpu_issue16.sh installs on a lent H200: the packages the
# batched TTS bench imports that the H200 image (Python 3.12, torch 2.11, transformers, numpy, scipy, numba,
# huggingface-hub, requests, pyyaml ... : /work/.library/device/KINDS.md) does not hold. Versions are the ones the
# project's virtualenv runs (docopt, num2words' CLI-only need, has no wheel and is not imported). The folder .whl/
# is git-ignored (.git/info/exclude) and travels to the device with `carry: [".whl"]`; about 8 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
PY=${PYTHON:-python3}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64; do platforms+=(--platform "$p"); done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl \
  coqui-tts==0.28.0 coqui-tts-trainer==0.4.0 coqpit-config==0.2.5 anyascii==0.3.3 ko-speech-tools==0.1.0 \
  monotonic-alignment-search==0.2.1 librosa==0.11.0 audioread==3.1.0 pooch==1.9.0 platformdirs decorator==5.3.1 \
  soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==0.5.0.post1 num2words==0.5.14 \
  inflect==7.6.0 more-itertools==11.2.1 typeguard==4.6.1 jaraco.functools pysbd==0.3.4 dill==0.4.1 \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
du -sh .whl
