"""Converters in worker processes: one fresh process per artifact, as many at once as there are cores.

Each worker writes one artifact (write, load back, rename: workflows/export_artifact.py) and exits,
so the memory a converter took returns to the system at once instead of staying with one process
to the end. The frozen graph travels to the workers as a file the pool writes once (serialized
bytes handed to each job would be pickled into the pool's queue once per queued job: up to three
copies of the weights in the parent at once). Workers are forked from
a forkserver that imported TensorFlow once and ran nothing: TensorFlow is not fork-safe once it
has run, and a fork of a process that only imported it saves each worker the import (seconds of
CPU on a small machine). Workers ignore SIGINT: the parent owns every interruption and kills them.

Errors travel back as they happen in the worker: a FacecvtError keeps its message (prefixed with
the artifact it was writing), anything else becomes a `ConverterCrash` (an internal error),
and a worker that dies (killed, out of memory) is named with the artifact it was writing.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import multiprocessing
import os
import select
import signal
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from facecvt.core.errors import FacecvtError
from facecvt.core.frozen import FrozenGraph

# Imported once by the forkserver, before any worker is forked from it (see the module docstring).
FORKSERVER_PRELOAD = ["facecvt.workflows.worker_preload"]


@dataclass(frozen=True)
class Job:
    """One artifact to write: `export(target, frozen, path, **options)` in a worker.

    `record`: (InputSpec, pairs) of the bundle's verify; the worker then also runs the artifact on
    those inputs while it is loaded and sends the outputs back (validate/runners/replay.py)."""

    target: str
    precision: str
    path: Path
    options: dict = field(default_factory=dict, hash=False, compare=False)
    record: tuple | None = field(default=None, hash=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.target} {self.precision}"


class ConverterCrash(Exception):
    """An exception facecvt did not foresee, raised in a worker: a bug, reported as an internal error."""


def _context():
    """The forkserver context, its server preloading FORKSERVER_PRELOAD when it starts."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    return context


def start_early() -> None:
    """Start the forkserver (and its imports) now, so that they overlap the parent's load and freeze."""
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


def _cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_count(jobs: int, wanted: int | None = None) -> int:
    """Workers to run: `wanted`, else one per core this process may use; never more than the jobs."""
    return max(1, min(jobs, wanted or _cores()))


class _Share:
    """A worker's share of the cores when it opens a runtime: the cores over the workers busy then
    (a count in shared memory each worker raises while it has a job)."""

    def __init__(self, busy, cores: int):
        self.busy, self.cores = busy, cores

    def __call__(self) -> int:
        return max(1, self.cores // max(1, self.busy.value))


def to_payload(frozen: FrozenGraph) -> tuple[bytes, dict]:
    """(serialized GraphDef, every other field) of a frozen graph, as it travels to the workers."""
    from dataclasses import fields

    # every field, so a field added to FrozenGraph (output_names, output_shapes...) travels too
    return frozen.graph_def.SerializeToString(), {
        f.name: getattr(frozen, f.name) for f in fields(frozen) if f.name != "graph_def"}


def from_payload(graph: bytes, meta: dict) -> FrozenGraph:
    from facecvt.core.tf_env import graph_def_class

    graph_def = graph_def_class()()
    graph_def.ParseFromString(graph)
    return FrozenGraph(graph_def, **meta)


# ---------------------------------------------------------------------------------------------
# in the worker

# The write end of a pipe to the parent's progress thread, set by _initialize. A plain pipe, not a
# multiprocessing queue: a queue's writers share a lock that a worker killed mid-write would hold
# for ever; a message this small is written to a pipe in one atomic write, without a lock.
_messages = None
_busy = None  # workers with a job now (shared memory), for the thread share


def _initialize(messages, parent: int, busy, cores: int) -> None:
    global _messages, _busy
    from facecvt.core.threads import set_thread_budget

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    _messages, _busy = messages, busy
    set_thread_budget(_Share(busy, cores))  # the runtimes that check this worker's artifact share the cores
    threading.Thread(target=_exit_with, args=(parent,), name="facecvt-parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    """End this worker as soon as the export process is gone, whatever it was doing.

    The parent kills the workers it knows of; this covers one the pool started after it looked
    (a replacement for a worker that had just finished). Such a worker is not the parent's child but
    the forkserver's, and the forkserver outlives the parent while any worker holds its pipe, so
    neither a parent-death signal nor an end-of-file would reach it: it would wait for work for ever.
    """
    try:
        watched = os.pidfd_open(parent)
    except (AttributeError, OSError):  # no pidfd (old kernel) or already gone: poll instead
        while _alive(parent):
            time.sleep(0.5)
    else:
        select.select([watched], [], [])  # readable once the process has exited
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pid reused by another user's process: ours is gone
        return False
    return True


def _say(job: Job, kind: str, text: str) -> None:
    _messages.send((kind, os.getpid(), job.label, text))


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _run(job: Job, graph_file: Path, meta: dict):
    """Write one artifact. Converters' temporary files go to a scratch folder beside the artifact (in the
    bundle's temporary folder), so that a killed worker's leftovers go when that folder is removed."""
    frozen = from_payload(Path(graph_file).read_bytes(), meta)
    record_on = None
    if job.record is not None:
        from facecvt.validate.verify import verification_batches

        inputs, pairs = job.record
        record_on = verification_batches(inputs, pairs, tuple(frozen.input_shape[1:4]))

    with _counted_busy():
        return _export_one(job, frozen, record_on)


@contextlib.contextmanager
def _counted_busy():
    """This worker counts among the busy ones within the block (for the other workers' thread share)."""
    if _busy is None:  # not in a pool's worker
        yield
        return
    with _busy.get_lock():
        _busy.value += 1
    try:
        yield
    finally:
        with _busy.get_lock():
            _busy.value -= 1


def _export_one(job: Job, frozen: FrozenGraph, record_on):
    from facecvt.workflows.export_artifact import export

    started = time.perf_counter()
    _say(job, "start", f"converting -> {job.path.name}")
    with tempfile.TemporaryDirectory(prefix=".worker-", dir=job.path.parent) as scratch:
        tempfile.tempdir = scratch  # coremltools, TF and tf2onnx write temporaries here, removed with the bundle
        os.environ["TMPDIR"] = scratch
        try:
            result = export(job.target, frozen, job.path, record_on=record_on, **job.options)
        except FacecvtError as error:
            raise FacecvtError(f"{job.label}: {error}") from None  # a fresh one: it pickles plainly
        except Exception as error:  # noqa: BLE001 - not foreseen: sent back as an internal error
            raise ConverterCrash(f"{job.label} converter raised {type(error).__name__}: {error}\n"
                                 f"{traceback.format_exc()}") from None
        finally:
            tempfile.tempdir = None
    ran = f", run on {_images(result.recording)} verify inputs" if result.recording is not None else ""
    _say(job, "done", f"written and loaded back{ran} in {time.perf_counter() - started:.1f} s "
                      f"(worker peak {_peak_rss_mb() / 1024:.1f} GB)")
    return result


def _images(recording) -> int:
    return sum(len(outputs[0]) for outputs in recording.outputs.values() if outputs)


# ---------------------------------------------------------------------------------------------
# in the parent


class ExportPool:
    """A process pool writing artifacts of one frozen graph; use as a context manager.

    Leaving the block with an exception (KeyboardInterrupt included) kills every worker and waits
    for them before the caller removes anything; leaving it normally waits for idle workers to exit.
    """

    def __init__(self, frozen: FrozenGraph, workers: int, progress=print, folder: Path | None = None):
        self._frozen = frozen
        self._folder = folder  # where the graph file goes: the bundle's temporary folder (default: TMPDIR)
        self._graph_file = None
        self._workers = workers
        self._progress = progress
        self._running: dict = {}  # job label -> pid, as the workers report
        self._names: dict = {}    # pid -> "worker N"
        self._executor = None

    def __enter__(self):
        graph, self._meta = to_payload(self._frozen)
        with tempfile.NamedTemporaryFile(dir=self._folder, prefix=".frozen-graph-", suffix=".pb",
                                         delete=False) as file:
            self._graph_file = Path(file.name)
            file.write(graph)
        del graph
        from facecvt.core.memory import return_free_memory

        return_free_memory()  # the serialized copy of the weights, before the workers take their share
        context = _context()
        self._messages, self._writer = context.Pipe(duplex=False)  # kept open: workers start as needed
        self._executor = futures.ProcessPoolExecutor(self._workers, mp_context=context, initializer=_initialize,
                                                     initargs=(self._writer, os.getpid(), context.Value("i", 0), _cores()),
                                                     max_tasks_per_child=1)
        self._stop = threading.Event()
        self._relay = threading.Thread(target=self._relay_progress, name="facecvt-export-progress", daemon=True)
        self._relay.start()
        return self

    def submit(self, job: Job) -> futures.Future:
        return self._executor.submit(_run, job, self._graph_file, self._meta)

    def result(self, future: futures.Future, job: Job):
        """The worker's ExportResult; a worker that died becomes a FacecvtError naming its artifact."""
        try:
            return future.result()
        except futures.process.BrokenProcessPool:
            raise FacecvtError(self._death_notice(job)) from None

    def __exit__(self, kind, error, trace):
        try:
            if kind is not None:
                self._kill_workers()
            self._executor.shutdown(wait=True, cancel_futures=True)
        finally:
            self._stop.set()
            self._relay.join(timeout=5)
            self._writer.close()
            self._messages.close()
            self._graph_file.unlink(missing_ok=True)

    def _kill_workers(self) -> None:
        """Kill every worker, again while the pool starts replacements for the ones that ended."""
        killed: set = set()
        while True:
            try:  # no public handle on them; the pool's thread may be adding one meanwhile
                processes = [p for p in list((self._executor._processes or {}).values())  # noqa: SLF001
                             if p.pid not in killed]
            except RuntimeError:  # changed size while read: read again
                continue
            if not processes:
                return
            for process in processes:
                with contextlib.suppress(Exception):
                    process.kill()
                killed.add(process.pid)
            for process in processes:
                process.join(timeout=10)

    def _death_notice(self, job: Job) -> str:
        running = ", ".join(self._running) or job.label
        return (f"a converter worker died while writing {running} (killed by a signal, or out of memory); "
                "nothing was written: free memory or export fewer targets at once (--targets)")

    def _relay_progress(self) -> None:
        while True:
            try:
                if not self._messages.poll(0.2):
                    if self._stop.is_set():  # stopped, and every message relayed
                        return
                    continue
                kind, pid, label, text = self._messages.recv()
            except (EOFError, OSError):  # closed: nothing more will come
                return
            name = self._names.setdefault(pid, f"worker {len(self._names) + 1}")
            if kind == "start":
                self._running[label] = pid
            else:
                self._running.pop(label, None)
            with contextlib.suppress(Exception):  # progress must never break the export
                self._progress(f"  {name} (pid {pid}) {label}: {text}")


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt, so `kill` cleans up as Ctrl-C does.

    Only in the main thread (Python delivers signals there); elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
