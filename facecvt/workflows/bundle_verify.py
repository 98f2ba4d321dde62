"""Verify a bundle's artifacts one at a time, as the workers deliver them, into one verify report.

Every artifact is compared on the same inputs; the reference embeds each input batch once however
many artifacts arrive, and the per-artifact reports are merged into the report `verify` would have
written for all of them at once (candidates in the bundle's order, one pairs block).
"""

from __future__ import annotations

import hashlib

import numpy as np

from facecvt.validate.report import build_report
from facecvt.validate.runners.base import Runner


class RememberingReference(Runner):
    """The reference runner, its outputs kept per input batch (keyed by the batch's bytes)."""

    def __init__(self, runner: Runner):
        super().__init__(runner.path)
        self.backend = runner.backend
        self._runner = runner
        self._seen: dict = {}

    @property
    def input_shape(self) -> tuple:
        return self._runner.input_shape

    @property
    def output_names(self) -> list[str]:
        return self._runner.output_names

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        key = hashlib.blake2b(np.ascontiguousarray(batch).tobytes(), digest_size=16).digest()
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

    def __getattr__(self, name):
        """Everything else is the wrapped runner's (verify's layer-by-layer localisation uses it)."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._runner, name)


class ArtifactVerifier:
    """`check` one artifact at a time against the reference; `report` merges them in a given order."""

    def __init__(self, reference: Runner, inputs, pairs=None):
        from facecvt.validate.pairs import read_pairs

        self.reference = RememberingReference(reference)
        self.inputs = inputs
        self.pairs = read_pairs(pairs, inputs.images) if pairs is not None else None  # read once
        self.reports: dict = {}

    def check(self, key, backend: str, path, precision: str) -> dict:
        """Verify one artifact; returns its `candidates` entry (pass, failed, max_abs, ...)."""
        from facecvt.validate.verify import verify

        report = verify(self.reference, [(backend, path, precision)], self.inputs, pairs=self.pairs)
        self.reports[key] = report
        # every reference output is remembered now: free the runtime while later artifacts convert
        # (it is reopened if a later check needs it, e.g. to localise a failure)
        release = getattr(self.reference, "release", None)  # the wrapped runner's, if it has one
        if release is not None:
            release()
        from facecvt.core.memory import return_free_memory

        return_free_memory()  # from the reference's runtime and the candidate's, closed by verify
        return report["candidates"][0]

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
