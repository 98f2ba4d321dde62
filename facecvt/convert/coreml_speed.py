"""Two costs of coremltools 9's MIL pass pipeline that buy nothing for the programs facecvt converts.

On the released FaceNet the pipeline (about 110 passes) took 12 of the converter's 17 s, most of it
in two pieces of bookkeeping rather than in the passes themselves:

- `Program.validate()` after every pass: a full walk checking that every variable is visible where
  it is used and that producers and consumers agree. It only reads the program. Within
  `validated_once`, the walks between passes are skipped and the finished program is validated once,
  with the same checks, so a pass that broke the program still fails the conversion.
- `Block.__exit__` recomputing, for every variable of the program, the set of "non-replaceable"
  variables upstream of it (`_propagate_nonreplaceable_vars`), each time any pass leaves a block:
  273 whole-program walks building a set per variable. Only outputs of `constexpr_*` ops (compressed
  weights) are non-replaceable. A program without such an op, whose sets are all empty, comes out
  of the walk unchanged, so within `propagation_skipped_without_constexpr` the walk is skipped when a
  cheaper scan finds neither a `constexpr_*` op nor a non-empty set; otherwise it runs as before.

Both patches are undone when the block ends. tests/test_coreml_export.py checks that a conversion
with them writes the same program and weights as one without.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def validated_once(program_of):
    """Within the block, `Program.validate()` does nothing; on leaving it normally, the program
    `program_of()` returns (the converted one) is validated once with the original method."""
    from coremltools.converters.mil.mil.program import Program

    original = Program.validate
    Program.validate = lambda self, check_essential_scope=False: None
    try:
        yield
    finally:
        Program.validate = original
    program = program_of()
    if program is not None:
        original(program)


def _holds_nonreplaceable(block) -> bool:
    """Whether any variable of `block` (nested blocks included) could have a non-empty set."""
    if any(var.nonreplaceable_vars_upstream for var in _block_inputs(block)):
        return True
    for op in block.operations:
        if op.op_type.startswith("constexpr_"):
            return True
        for var in op.outputs or ():
            if var.nonreplaceable_vars_upstream:
                return True
        if any(_holds_nonreplaceable(inner) for inner in op.blocks):
            return True
    return False


def _block_inputs(block):
    inputs = block.inputs
    return inputs.values() if isinstance(inputs, dict) else inputs


@contextlib.contextmanager
def propagation_skipped_without_constexpr():
    """Within the block, leaving a MIL block skips the non-replaceable-variable walk when it would
    change nothing (no `constexpr_*` op, every set empty)."""
    from coremltools.converters.mil.mil.block import Block

    original = Block._propagate_nonreplaceable_vars

    def propagate(self):
        if _holds_nonreplaceable(self):
            original(self)

    Block._propagate_nonreplaceable_vars = propagate
    try:
        yield
    finally:
        Block._propagate_nonreplaceable_vars = original
