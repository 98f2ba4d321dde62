"""How many threads each runtime opened in this process may use: its share of the machine's cores.

None (the default) lets every runtime use every core, as each does on its own. An export worker
shares the cores with the other workers and sets its share once (`set_thread_budget`): the
runners it opens (ONNX Runtime, LiteRT, OpenCV, TensorFlow) take that many threads, and so does
numpy's BLAS, which the Core ML executor's convolutions run on. Oversubscribed, OpenBLAS's threads
spin while they wait for a preempted sibling: the executor measured 3-4x the CPU time per image
while two other processes kept both cores busy.
"""

from __future__ import annotations

_budget: int | None = None
_blas_limit = None  # threadpoolctl's limiter: the BLAS limit holds while it is referenced


def set_thread_budget(threads: int | None) -> None:
    """Every runtime opened from now on takes `threads` threads (None: its own default)."""
    global _budget, _blas_limit
    from threadpoolctl import threadpool_limits

    _budget = int(threads) if threads else None
    if _blas_limit is not None:
        _blas_limit.restore_original_limits()
        _blas_limit = None
    if _budget is not None:
        _blas_limit = threadpool_limits(limits=_budget, user_api="blas")


def thread_budget() -> int | None:
    """The threads a runtime may take here (None: its own default)."""
    return _budget
