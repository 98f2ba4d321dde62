"""`inspect`'s freeze plan announces the batch norms freeze folds: a cond holds each one twice, one is folded."""

from __future__ import annotations

import re

import pytest

from facecvt.core.model import load_model
from facecvt.graph_ops.pipeline import freeze
from facecvt.workflows.inspect_model import inspect_model


def planned_and_folded(path) -> tuple:
    """(batch norms the plan announces, batch norms fold_batch_norms reports) for the model at `path`."""
    model = load_model(path)
    line = next((l for l in inspect_model(model)["freeze_plan"] if "batch norms" in l), "fold 0 ")
    report = next(r for r in freeze(model).reports if r.name == "fold_batch_norms")
    folded = sum(int(n) for n in re.findall(r"(\d+) (?:batch norms into weights|into Mul\+BiasAdd)", report.summary))
    return int(re.match(r"fold (\d+) ", line).group(1)), folded


@pytest.mark.parametrize("sample", ["mobile_raw_pb", "tf2_raw_pb"])  # v1 conds; TF2 StatelessIf branches
def test_plan_counts_what_freeze_folds(sample, request):
    planned, folded = planned_and_folded(request.getfixturevalue(sample))
    assert planned == folded > 0


@pytest.mark.slow
def test_plan_counts_what_freeze_folds_on_the_facenet_sample(tmp_path):
    """224 FusedBatchNorm nodes, 112 in training branches: the plan announces the 112 freeze folds."""
    from facecvt.samples.facenet import SampleSpec, write_sample

    path = tmp_path / "facenet_random.pb"
    write_sample(SampleSpec(weights="random"), path, "pb")
    planned, folded = planned_and_folded(path)
    assert planned == folded == 112
