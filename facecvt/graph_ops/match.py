"""Declarative patterns over a GraphDef, after tf2onnx's rewriters.

A pattern is a tree of ops with named leaves:

    PRELU = op("AddV2", op("Relu", tensor("x")), op("Mul", const("alpha"), op("Relu", op("Neg", tensor("x")))))
    for m in matches(PRELU, nodes, add.name): m["x"], m.values["alpha"], m.nodes[...]

- the operands of a commutative op (Add, AddV2, Mul, Maximum, Minimum) match in either order;
- a name used twice must be the same tensor both times (the `x` above);
- producers are found through pass-through ops (Identity, StopGradient, ...);
- `op("Add|AddV2", ...)` takes any of the ops; `either(a, b)` any of the patterns;
- a pattern with no inputs does not look at its node's inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from facecvt.graph_ops.graph import const_value, node_name, resolve, source
from facecvt.graph_ops.op_families import COMMUTATIVE


@dataclass(frozen=True)
class Pattern:
    ops: frozenset | None = None       # op types the node may have; None for a leaf
    inputs: tuple = ()
    name: str | None = None
    is_const: bool = False             # a leaf that must be a Const
    where: Callable | None = None      # for a Const leaf: a test of its value
    alternatives: tuple = ()           # for either(): the patterns tried in turn


def op(types, *inputs: Pattern, name: str | None = None) -> Pattern:
    """A node of one of `types` ("Add|AddV2" or a set), whose data inputs match `inputs` (unchecked when none)."""
    return Pattern(ops=frozenset(types.split("|") if isinstance(types, str) else types), inputs=inputs, name=name)


def tensor(name: str | None = None) -> Pattern:
    """Any tensor."""
    return Pattern(name=name)


def const(name: str | None = None, where: Callable | None = None) -> Pattern:
    """A Const (its value in Match.values) for which `where(value)` holds."""
    return Pattern(name=name, is_const=True, where=where)


def either(*alternatives: Pattern) -> Pattern:
    return Pattern(alternatives=alternatives)


@dataclass(frozen=True)
class Match:
    """What a pattern bound: tensor refs as their consumers read them, the nodes of named op patterns
    (leaves bind no node), the values of named Const leaves."""

    refs: dict = field(default_factory=dict)
    nodes: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.refs[name]

    def bind(self, name, ref, node=None, value=None) -> "Match":
        if name is None:
            return self
        bound = replace(self, refs={**self.refs, name: ref})
        if node is not None:
            bound = replace(bound, nodes={**bound.nodes, name: node})
        if value is not None:
            bound = replace(bound, values={**bound.values, name: value})
        return bound


def matches(pattern: Pattern, nodes: dict, ref: str) -> Iterator[Match]:
    """Every way tensor `ref` matches `pattern` (`nodes`: name -> NodeDef).

    The node of `ref` itself is the root: only its inputs are looked through pass-through ops
    (an Identity named as an output is no Add, even when it forwards one).
    """
    return _bindings(pattern, nodes, ref, Match(), root=True)


def match(pattern: Pattern, nodes: dict, ref: str, where: Callable | None = None) -> Match | None:
    """The first way `ref` matches `pattern` (and `where(match)` holds), or None."""
    return next((m for m in matches(pattern, nodes, ref) if where is None or where(m)), None)


def _bindings(pattern: Pattern, nodes: dict, ref: str, bound: Match, root: bool = False) -> Iterator[Match]:
    if pattern.alternatives:
        for alternative in pattern.alternatives:
            yield from _bindings(alternative, nodes, ref, bound, root)
        return
    if pattern.name in bound.refs:  # a name seen before: the same tensor again
        if resolve(nodes, bound.refs[pattern.name]) == resolve(nodes, ref):
            yield bound
        return
    node = nodes.get(node_name(ref)) if root else source(nodes, ref)
    if pattern.is_const:
        value = const_value(node)
        if value is not None and (pattern.where is None or pattern.where(value)):
            yield bound.bind(pattern.name, ref, value=value)
        return
    if pattern.ops is None:
        yield bound.bind(pattern.name, ref)
        return
    if node is None or node.op not in pattern.ops:
        return
    bound = bound.bind(pattern.name, ref, node)
    if not pattern.inputs:
        yield bound
        return
    data = [r for r in node.input if not r.startswith("^")]
    if len(data) != len(pattern.inputs):
        return
    orders = [data, data[::-1]] if node.op in COMMUTATIVE and len(data) == 2 else [data]
    for operands in orders:
        yield from _all(pattern.inputs, operands, nodes, bound)


def _all(patterns: tuple, refs: list, nodes: dict, bound: Match) -> Iterator[Match]:
    if not patterns:
        yield bound
        return
    for first in _bindings(patterns[0], nodes, refs[0], bound):
        yield from _all(patterns[1:], refs[1:], nodes, first)
