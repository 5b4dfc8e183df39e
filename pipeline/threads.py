"""CPU threads per model worker.

ONNX Runtime (Piper, DNSMOS), CTranslate2 (faster-whisper), torch and BLAS each start one thread per core by
default. One such process alone uses the machine well; several of them (a TTS actor beside two verify actors)
run cores x actors threads that preempt each other, and every stage gets slower than it is alone. So a
model actor runs as many threads as the CPUs it reserved from Ray (`tts.cpu_threads`, `verify.cpu_threads`),
and the stage's actor pool, not its thread pool, is what fills the machine. `None` everywhere here means
"the library's own default" (what a plain script gets).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def threads_for(num_cpus: float, explicit: int | None = None) -> int:
    """Threads for an actor that reserved `num_cpus` CPUs: the explicit setting, else that many rounded (>= 1)."""
    return explicit if explicit is not None else max(1, int(num_cpus + 0.5))


def limit_threads(threads: int | None) -> None:
    """Cap this process's OpenMP/BLAS pools (and torch's, once imported) at `threads`; None leaves them alone.

    Ray sets OMP_NUM_THREADS itself only for whole-CPU reservations, and after numpy is imported the variable
    no longer reaches its BLAS: threadpoolctl changes the live pools, the variables cover libraries loaded later.
    """
    if threads is None:
        return
    for var in _ENV_VARS:
        os.environ[var] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


def onnx_session(model: str | Path | bytes, threads: int | None, providers: list | None = None):
    """An ONNX Runtime session with `threads` intra-op threads (None: one per core, ONNX Runtime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # a worker sharing cores with other workers must not busy-wait for work between operators
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options,
                                providers=providers or ["CPUExecutionProvider"])
