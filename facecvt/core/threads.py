"""How many threads each runtime opened in this process may use: its share of the machine's cores.

None (the default) lets every runtime use every core, as each does on its own. An export worker
shares the cores with the other workers and sets its share (`set_thread_budget`), as a number or
as a function giving the share at the moment a runtime opens (a worker running alone takes every
core). The runners take that many threads when they open (ONNX Runtime, LiteRT, OpenCV,
TensorFlow), and numpy's BLAS, which the Core ML executor's convolutions run on, is held to it.
Oversubscribed, OpenBLAS's threads spin while they wait for a preempted sibling: the executor
measured 3-4x the CPU time per image while two other processes kept both cores busy.
"""

from __future__ import annotations

from typing import Callable

_budget: int | Callable[[], int] | None = None
_blas: tuple = (None, None)  # (threads numpy's BLAS is held to, threadpoolctl's limiter holding it)


def set_thread_budget(threads: int | Callable[[], int] | None) -> None:
    """Runtimes opened from now on take `threads` threads (a function: asked at each opening)."""
    global _budget
    _budget = threads
    thread_budget()


def thread_budget() -> int | None:
    """The threads a runtime opened now may take (None: its own default); numpy's BLAS is held to it."""
    threads = _budget() if callable(_budget) else _budget
    threads = max(1, int(threads)) if threads else None
    _hold_blas(threads)
    return threads


def _hold_blas(threads: int | None) -> None:
    global _blas
    held, limiter = _blas
    if threads == held:
        return
    if limiter is not None:
        limiter.restore_original_limits()
    if threads is None:
        _blas = (None, None)
        return
    from threadpoolctl import threadpool_limits

    _blas = (threads, threadpool_limits(limits=threads, user_api="blas"))
