"""Which net of a backend's pipeline departs: each of P-, R-, O-Net and the embedder against the TensorFlow
pipeline's, on the very inputs the TensorFlow pipeline fed it during `verify --pipeline`.

`Recorded` wraps a net of the reference pipeline and keeps the inputs it ran on and its outputs (up to
`BUDGET` bytes of inputs a net: a whole run's pyramids can be large); `check_nets` runs a candidate
pipeline's nets on those inputs and judges every output as `verify` judges an export's outputs
(`validate.compare.OutputComparator`, limits by precision and output kind: prob, box and landmarks
for the detector nets, embedding for the embedder). End to end, a small departure of one net may
leave the faces unchanged on the images at hand, and a large one shows only as a moved box: this
names the net.
"""

from __future__ import annotations

import numpy as np

from facecvt.pipeline.detector_nets import ROLES

BUDGET = 64 * 1024 * 1024  # bytes of recorded inputs per net
NET_KINDS = {**{net: tuple(role for role, _ in roles) for net, roles in ROLES.items()}, "embedder": ("embedding",)}


class Recorded:
    """A detector net (`run`) or embedder runner (`embed`) that keeps (input, outputs) of its calls."""

    def __init__(self, inner, budget: int = BUDGET):
        self.inner, self.budget = inner, budget
        self.calls: list = []
        self.used = 0
        self.skipped = 0  # calls over the budget, not kept

    def _keep(self, batch: np.ndarray, outputs: list) -> None:
        if self.used + batch.nbytes > self.budget:
            self.skipped += 1
            return
        self.used += batch.nbytes
        self.calls.append((np.array(batch, copy=True), [np.array(o, copy=True) for o in outputs]))

    def run(self, batch: np.ndarray) -> list:
        outputs = self.inner.run(batch)
        self._keep(batch, outputs)
        return outputs

    def embed(self, batch: np.ndarray) -> np.ndarray:
        vectors = self.inner.embed(batch)
        self._keep(batch, [vectors])
        return vectors

    def __getattr__(self, name):
        """Everything else (input_shape, path, ...) is the wrapped net's."""
        if name.startswith("_") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def recorded_nets(pipeline) -> dict:
    """Wrap `pipeline`'s three detector nets and its embedder in `Recorded`, in place; {net: Recorded}."""
    detector = pipeline.detector
    recorded = {net: Recorded(getattr(detector, net)) for net in ("pnet", "rnet", "onet")}
    for net, wrapper in recorded.items():
        setattr(detector, net, wrapper)
    recorded["embedder"] = pipeline.embedder = Recorded(pipeline.embedder)
    return recorded


def _candidate_call(pipeline, net: str):
    if net == "embedder":
        return lambda batch: [pipeline.embedder.embed(batch)]
    return getattr(pipeline.detector, net).run


def check_nets(recorded: dict, pipeline, precision: str) -> dict:
    """{net: {"calls", "skipped", "outputs": [OutputComparator results], "pass", "failed"}} of `pipeline`'s
    nets on the inputs `recorded` kept; a net that never ran in the reference is left out."""
    from facecvt.validate.compare import OutputComparator, OutputTolerances

    results = {}
    for net, kept in recorded.items():
        if not kept.calls:
            continue
        comparators = [OutputComparator(kind if net == "embedder" else f"{net} {kind}", kind,
                                        OutputTolerances.for_output(precision, kind)) for kind in NET_KINDS[net]]
        run = _candidate_call(pipeline, net)
        for batch, ref_outputs in kept.calls:
            for comparator, ref, cand in zip(comparators, ref_outputs, run(batch)):
                comparator.update(np.asarray(ref), np.asarray(cand), input_hw=batch.shape[1:3])
        outputs = [c.result() for c in comparators]
        failed = [f"{o['kind']} {m}" for o in outputs for m in o["failed"]]
        results[net] = {"calls": len(kept.calls), "skipped": kept.skipped, "outputs": outputs,
                        "pass": not failed, "failed": failed}
    return results
