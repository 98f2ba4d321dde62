"""Property test: mutated GraphDefs give exit 0 or exit 2 for every command, never a traceback or a leftover.

An unforeseen exception exits 3 (an internal error), which this test does not accept: a bug fails it
(test_bad_input.py plants one to show that).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from test_bad_input import COMMANDS, command_args, invoke

pytestmark = pytest.mark.slow

DTYPES = [1, 2, 3, 9, 10, 19]  # float, double, int32, int64, bool, half


@pytest.fixture(scope="module")
def base_bytes():
    from facecvt.samples.mobile import tiny_training_graph_def

    return tiny_training_graph_def().SerializeToString()


def mutate(data: bytes, draw) -> bytes:
    from facecvt.core.tf_env import graph_def_class

    kind = draw(st.sampled_from(["drop_node", "dangling", "rename_input", "dtype", "shape", "truncate",
                                 "random_bytes", "unknown_op", "swap_inputs", "rename_node", "clear_attr"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "random_bytes":
        return draw(st.binary(min_size=0, max_size=2000))
    graph_def = graph_def_class()()
    graph_def.ParseFromString(data)
    nodes = list(graph_def.node)
    node = nodes[draw(st.integers(0, len(nodes) - 1))]
    if kind == "drop_node":
        graph_def.node.remove(node)
    elif kind == "dangling" and node.input:
        node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(["ghost", "ghost:3", "^ghost"]))
    elif kind == "rename_input" and node.input:
        other = nodes[draw(st.integers(0, len(nodes) - 1))].name
        node.input[draw(st.integers(0, len(node.input) - 1))] = other
    elif kind == "dtype":
        key = draw(st.sampled_from(["T", "dtype"]))
        node.attr[key].type = draw(st.sampled_from(DTYPES))
    elif kind == "shape":
        shape = node.attr["shape"].shape
        del shape.dim[:]
        for size in draw(st.lists(st.integers(-1, 20), max_size=5)):
            shape.dim.add(size=size)
    elif kind == "unknown_op":
        node.op = draw(st.sampled_from(["PyFunc", "NoSuchOp", "EagerPyFunc", "Assert"]))
    elif kind == "swap_inputs" and len(node.input) >= 2:
        node.input[0], node.input[1] = node.input[1], node.input[0]
    elif kind == "rename_node":
        node.name = draw(st.sampled_from(["input", "embeddings", "phase_train", "x"]))
    elif kind == "clear_attr" and node.attr:
        del node.attr[draw(st.sampled_from(sorted(node.attr)))]
    return graph_def.SerializeToString()


def check_command(model: Path, command: str, out_dir: Path) -> None:
    """One command on one model: exit 0 or 2 (never 1 or a bug's 3), no traceback, nothing left on failure."""
    out_dir.mkdir()
    args, outputs = command_args(command, model, out_dir)
    result = invoke(*args)
    assert result.exit_code in (0, 2), (command, result.output, repr(result.exception))
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr
        assert not any(p.exists() for p in outputs), command
        assert not list(out_dir.iterdir()), command


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_graphs_never_crash(base_bytes, data):
    mutated = mutate(base_bytes, data.draw)
    folder = Path(tempfile.mkdtemp(prefix="facecvt-fuzz-"))
    try:
        model = folder / "mutated.pb"
        model.write_bytes(mutated)
        for command in COMMANDS:
            check_command(model, command, folder / command)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
