"""Run an ML program's `main` function op by op with NumPy, the way a device would store values.

Values live in an environment keyed by MIL variable name. Each op's result is rounded to the
dtype the program declares for it (fp16 results really are float16 values, as on a device that
computes in half precision), then kept as float32 so the next op computes quickly. Constants
are read once when the executor is built; intermediate values are dropped after their last use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError
from facecvt.validate.mil.dtypes import STORAGE, as_stored, mil_dtype_name
from facecvt.validate.mil.ops import OPS
from facecvt.validate.mil.program import MilProgram, load_program


@dataclass
class _Step:
    op_type: str
    fn: object
    inputs: dict  # parameter name -> var name, or list of var names for variadic inputs
    outputs: list  # (var name, dtype name)
    frees: list  # var names not needed after this step
    exact: bool  # the results are already exact in their dtype: no rounding needed


def _input_names(op) -> dict:
    return {param: [v.name for v in var] if isinstance(var, (list, tuple)) else var.name
            for param, var in op.inputs.items()}


# Ops whose results are input values moved or selected, never new numbers: on inputs of the
# output's own dtype they need no rounding (which saves converting every relu of an fp16 model).
_VALUE_PRESERVING = {
    "relu", "max_pool", "concat", "reshape", "transpose", "squeeze", "expand_dims", "identity",
    "slice_by_index", "slice_by_size", "split", "stack", "maximum", "minimum", "tile", "gather",
}


def _is_exact(op, outputs) -> bool:
    if op.op_type not in _VALUE_PRESERVING:
        return False
    dtypes = {dtype for _, dtype in outputs}
    for var in op.inputs.values():
        for v in var if isinstance(var, (list, tuple)) else [var]:
            name = mil_dtype_name(v)
            if name.startswith("fp") and name not in dtypes:
                return False
    return len(dtypes) == 1


def _is_constant(op) -> bool:
    # constexpr_* ops (compressed weights) are decompressed by coremltools at load time.
    return op.op_type == "const" or op.op_type.startswith("constexpr_")


def unsupported_op_error(op_type: str, output: str) -> FacecvtError:
    """The error for an op the reference executor has no implementation of."""
    return FacecvtError(f"Core ML op '{op_type}' (output '{output}') is not supported by "
                        f"facecvt's reference executor")


class MilExecutor:
    """A NumPy interpreter of one ML program: `run({input name: array}) -> {output name: array}`."""

    def __init__(self, program: MilProgram | str | Path):
        self.program = program if isinstance(program, MilProgram) else load_program(program)
        self.constants: dict = {}
        self.steps: list[_Step] = []
        self._plan()

    def _plan(self) -> None:
        for op in self.program.operations:
            outputs = [(var.name, mil_dtype_name(var)) for var in op.outputs]
            if _is_constant(op):
                for var, (name, dtype) in zip(op.outputs, outputs):
                    if var.val is None:
                        raise unsupported_op_error(op.op_type, name)
                    self.constants[name] = as_stored(var.val, dtype)
                continue
            fn = OPS.get(op.op_type)
            if fn is None:
                raise unsupported_op_error(op.op_type, outputs[0][0] if outputs else op.name)
            self.steps.append(_Step(op.op_type, fn, _input_names(op), outputs, [], _is_exact(op, outputs)))
        self._schedule_frees()

    def _schedule_frees(self) -> None:
        keep = set(self.constants) | set(self.program.outputs)
        last_use = {}
        for index, step in enumerate(self.steps):
            for names in step.inputs.values():
                for name in names if isinstance(names, list) else [names]:
                    last_use[name] = index
        for name, index in last_use.items():
            if name not in keep:
                self.steps[index].frees.append(name)

    def _feed(self, feeds: dict) -> dict:
        env = dict(self.constants)
        missing = set(self.program.inputs) - set(feeds)
        if missing:
            raise FacecvtError(f"the Core ML program needs input(s) {', '.join(sorted(missing))}; "
                               f"got {', '.join(sorted(feeds)) or 'none'}")
        for name, (shape, dtype) in self.program.inputs.items():
            value = np.asarray(feeds[name])
            fits = value.ndim == len(shape) and all(d is None or d == v for d, v in zip(shape, value.shape))
            if not fits:
                wanted = tuple("?" if d is None else d for d in shape)
                raise FacecvtError(f"Core ML input '{name}' takes shape {wanted}, got {value.shape}")
            env[name] = as_stored(value, dtype)
        return env

    def run(self, feeds: dict, *, intermediates: bool = False) -> dict:
        """Execute the program on `feeds` and return its outputs in the program's dtypes.

        With `intermediates` every op's result is kept and returned too (by MIL variable name).
        """
        env = self._feed(feeds)
        kept = {}
        for step in self.steps:
            args = {param: [env[n] for n in names] if isinstance(names, list) else env[names]
                    for param, names in step.inputs.items()}
            first_output = step.outputs[0][0] if step.outputs else "?"
            try:
                result = step.fn(**args)
            except Exception as exc:
                raise FacecvtError(f"Core ML op '{step.op_type}' (output '{first_output}') failed in "
                                   f"facecvt's reference executor: {exc}") from exc
            results = result if isinstance(result, tuple) else (result,)
            for (name, dtype), value in zip(step.outputs, results):
                env[name] = value if step.exact else as_stored(value, dtype)
                if intermediates:
                    kept[name] = env[name]
            for name in step.frees:
                env.pop(name, None)
        outputs = {}
        for var in self.program.function.outputs:
            dtype = mil_dtype_name(var)
            outputs[var.name] = np.asarray(env[var.name]).astype(STORAGE.get(dtype, np.float32))
        return {**kept, **outputs}

    def op_counts(self) -> dict:
        """{op type: how many} over the program, constants included."""
        counts: dict = {}
        for op in self.program.operations:
            counts[op.op_type] = counts.get(op.op_type, 0) + 1
        return counts
