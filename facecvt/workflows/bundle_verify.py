"""Verify a bundle's artifacts one at a time, as the workers deliver them, into one verify report.

Every artifact is compared on the same inputs; the reference embeds each input batch once however
many artifacts arrive, and the per-artifact reports are merged into the report `verify` would have
written for all of them at once (candidates in the bundle's order, one pairs block).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from facecvt.validate.report import build_report
from facecvt.validate.runners.base import Runner
from facecvt.validate.runners.replay import ReplayRunner, batch_key


# Images per reference run during an export: bounds the activations it holds while converters run
# beside it (32 FaceNet inputs at once held about 1.5 GB); a batch's outputs are still kept whole.
REFERENCE_CHUNK = 4


class RememberingReference(Runner):
    """The reference runner, its outputs kept per input batch (keyed by the batch's bytes)."""

    def __init__(self, runner: Runner):
        super().__init__(runner.path)
        self.backend = runner.backend
        self._runner = runner
        self._runner.max_chunk = min(runner.max_chunk or REFERENCE_CHUNK, REFERENCE_CHUNK)
        self._seen: dict = {}

    @property
    def input_shape(self) -> tuple:
        return self._runner.input_shape

    @property
    def output_names(self) -> list[str]:
        return self._runner.output_names

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        key = batch_key(batch)
        if key not in self._seen:
            self._seen[key] = self._runner.run(batch)
        return self._seen[key]

    def activations(self, batch: np.ndarray) -> dict:
        return self._runner.activations(batch)

    def describe(self) -> str:
        return self._runner.describe()

    @property
    def executed_by(self) -> str:
        return self._runner.executed_by

    def close(self) -> None:
        self._runner.close()

    def __getattr__(self, name):
        """Everything else is the wrapped runner's (verify's layer-by-layer localisation uses it)."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._runner, name)


class ReferenceInAdvance:
    """The reference's outputs on every verify input, computed in a thread while the model freezes.

    TensorFlow lets go of the interpreter while it runs a batch and freezing is mostly Python, so
    the two share the machine with little waiting; the thread returns the reference's memory as soon
    as it is done (on the released FaceNet, a few seconds into the workers' first conversions), and
    no check waits for it later. `result(frozen)` waits for the thread and gives the remembering
    reference (its session closed, reopened if a check needs it).
    """

    def __init__(self, model, inputs, pairs):
        self._done = threading.Event()
        self._remembered = self._error = None
        self.count, self.seconds = 0, 0.0
        threading.Thread(target=self._run, args=(model, inputs, pairs), name="facecvt-reference",
                         daemon=True).start()

    def _run(self, model, inputs, pairs) -> None:
        from facecvt.validate.runners.tensorflow import TensorFlowRunner
        from facecvt.validate.verify import verification_batches

        started = time.perf_counter()
        try:
            remembered = RememberingReference(TensorFlowRunner(model.path, model=model))
            for batch in verification_batches(inputs, pairs, tuple(model.input_shape[1:4])):
                remembered.run(batch)
                self.count += len(batch)
            remembered.release()
            from facecvt.core.memory import return_free_memory

            return_free_memory()
            self._remembered = remembered
        except BaseException as error:  # noqa: BLE001 - handed to the thread that asks for the result
            self._error = error
        finally:
            self.seconds = time.perf_counter() - started
            self._done.set()

    def result(self, frozen) -> RememberingReference:
        self._done.wait()
        if self._error is not None:
            raise self._error
        self._remembered.use_clean_graph(frozen)
        return self._remembered


class ArtifactVerifier:
    """`check` one artifact at a time against the reference; `report` merges them in a given order."""

    def __init__(self, reference: Runner, inputs, pairs=None):
        from facecvt.validate.pairs import read_pairs

        self.reference = reference if isinstance(reference, RememberingReference) else RememberingReference(reference)
        self.inputs = inputs
        self.pairs = read_pairs(pairs, inputs.images) if pairs is not None else None  # read once
        self.reports: dict = {}

    def remember_reference(self, shape_hwc) -> int:
        """Run the reference on every verify input now (while the workers convert), then free its
        runtime; returns the number of inputs. A later check reuses the outputs."""
        from facecvt.validate.verify import verification_batches

        count = 0
        for batch in verification_batches(self.inputs, self.pairs, shape_hwc):
            self.reference.run(batch)
            count += len(batch)
        self._release_reference()
        return count

    def check(self, key, backend: str, path, precision: str, recording=None) -> dict:
        """Verify one artifact; returns its `candidates` entry (pass, failed, max_abs, ...).

        With a `recording` (the artifact's outputs on the verify inputs, computed by the worker that
        wrote it) the artifact is compared from it, and opened here only if the check needs more."""
        from facecvt.validate.artifacts import default_runner_options
        from facecvt.validate.verify import open_runner, verify

        candidate = (backend, path, precision)
        if recording is not None:
            replayed = ReplayRunner(backend, path, recording,
                                    lambda: open_runner(backend, path, default_runner_options(backend, path)))
            candidate = (replayed, precision)
        report = verify(self.reference, [candidate], self.inputs, pairs=self.pairs)
        self.reports[key] = report
        self._release_reference()
        return report["candidates"][0]

    def _release_reference(self) -> None:
        """Every reference output is remembered now: free the runtime while later artifacts convert
        (it is reopened if a later check needs it, e.g. to localise a failure)."""
        release = getattr(self.reference, "release", None)  # the wrapped runner's, if it has one
        if release is not None:
            release()
        from facecvt.core.memory import return_free_memory

        return_free_memory()  # from the reference's runtime and the candidate's, closed by verify

    def report(self, keys) -> dict:
        """The reports of `keys` (checked already) merged into one, candidates in that order."""
        return merge_reports([self.reports[key] for key in keys])


def merge_reports(reports: list) -> dict:
    """One report from single-candidate reports of the same reference and inputs."""
    first = reports[0]
    pairs = None
    if first.get("pairs"):
        rows = [first["pairs"]["results"][0]] + [row for r in reports for row in r["pairs"]["results"][1:]]
        pairs = {**first["pairs"], "results": rows}
    reference = (first["reference"]["backend"], first["reference"]["path"])
    report = build_report(reference, [c for r in reports for c in r["candidates"]], first["inputs"], pairs)
    report["outputs"] = first["outputs"]
    warnings = [w for r in reports for w in r.get("warnings", [])]
    if warnings:
        report["warnings"] = warnings
    return report
