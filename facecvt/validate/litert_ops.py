"""Where a .tflite model's time goes in LiteRT: which ops XNNPACK takes, which run on builtin kernels.

LiteRT hands every op the XNNPACK delegate supports to it, in partitions of consecutive
supported ops; an op it does not support runs on LiteRT's reference/optimised builtin kernel,
and each partition boundary costs a hand-over. `delegation` reads that split from an allocated
interpreter: each DELEGATE node covers the original ops between its inputs and its outputs.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np


def _interpreter(path: str | Path, delegates: bool = True, threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def _covered(ops: list, delegate: dict) -> set:
    """Indices of the original ops a DELEGATE node runs: downstream of its inputs and upstream of its outputs."""
    produced_by = {int(t): op["index"] for op in ops for t in op["outputs"]}
    upstream, stack = set(), [int(t) for t in delegate["outputs"]]
    boundary = {int(t) for t in delegate["inputs"]}
    while stack:
        tensor = stack.pop()
        if tensor in boundary or tensor not in produced_by:
            continue
        index = produced_by[tensor]
        if index not in upstream:
            upstream.add(index)
            stack.extend(int(t) for t in ops[index]["inputs"] if t >= 0)
    return upstream


def delegation(path: str | Path) -> dict:
    """{"partitions", "ops": [{"index", "op", "output", "input_type", "delegated"}], "not_delegated": {OP: n}}."""
    interpreter = _interpreter(path)
    details = interpreter._get_ops_details()
    ops = [op for op in details if op["op_name"] != "DELEGATE"]
    delegated = set()
    for node in details:
        if node["op_name"] == "DELEGATE":
            delegated |= _covered(ops, node)
    rows = [{"index": op["index"], "op": op["op_name"], "delegated": op["index"] in delegated,
             "output": interpreter._interpreter.TensorName(int(op["outputs"][0]), 0) if len(op["outputs"]) else "",
             "input_type": np.dtype(op["operand_types"][0]).name if op["operand_types"] else ""} for op in ops]
    return {"partitions": sum(node["op_name"] == "DELEGATE" for node in details), "ops": rows,
            "not_delegated": dict(Counter(r["op"] for r in rows if not r["delegated"]).most_common()),
            "op_types": dict(Counter(r["op"] for r in rows).most_common())}


def latency_ms(path: str | Path, batch: int = 1, repeats: int = 10, delegates: bool = True,
               threads: int | None = None) -> float:
    """Median ms of one invoke at `batch` (two warm-up runs), with or without LiteRT's default XNNPACK."""
    interpreter = _interpreter(path, delegates, threads)
    detail = interpreter.get_input_details()[0]
    shape = [batch, *detail["shape"][1:]]
    interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    times = []
    for run in range(repeats + 2):
        interpreter.set_tensor(detail["index"], x)
        started = time.perf_counter()
        interpreter.invoke()
        if run >= 2:
            times.append(1000 * (time.perf_counter() - started))
    return float(np.median(times))

