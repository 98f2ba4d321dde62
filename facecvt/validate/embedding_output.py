"""Which output of a model holds the face embedding that `verify --pairs` compares.

- `--embedding-output NAME` names it (a node name, with or without its ':0' port);
- a model with one output: that output;
- several outputs: the one output shaped like an embedding, a 2-D float vector (N, D) with
  D >= MIN_EMBEDDING_SIZE (a detector's probability, box and landmarks are 2, 4 and 10 wide);
  when several are, the one of them named like an embedding ('embedding' in its name);
- otherwise there is no telling: a one-line error lists the outputs and asks for the option.
"""

from __future__ import annotations

from facecvt.core.errors import FacecvtError, did_you_mean
from facecvt.core.graph_names import node_name

MIN_EMBEDDING_SIZE = 64


def requested_embedding(names: list[str], requested: str | None, model: str) -> int | None:
    """The index of the embedding output when it is known without the outputs' shapes: the one
    `--embedding-output` names, or the only output; None when the shapes must decide."""
    if requested:
        wanted = node_name(requested.strip())
        if wanted in names:
            return names.index(wanted)
        raise FacecvtError(f"--embedding-output {requested!r} is not an output of {model} (its outputs: "
                           f"{', '.join(names)}){did_you_mean(wanted, names)}; name one of them")
    return 0 if len(names) == 1 else None


def embedding_by_shape(names: list[str], shapes: list[tuple], model: str) -> int:
    """The index of the one output shaped like an embedding, from the outputs' (N, ...) shapes."""
    vectors = [i for i, shape in enumerate(shapes) if len(shape) == 2 and shape[1] >= MIN_EMBEDDING_SIZE]
    if len(vectors) > 1:
        named = [i for i in vectors if "embedding" in names[i].lower()]
        vectors = named if len(named) == 1 else vectors
    if len(vectors) == 1:
        return vectors[0]
    listed = ", ".join(f"{name} {_dims(shape)}" for name, shape in zip(names, shapes))
    what = (f"{len(vectors)} of its outputs look like one" if vectors
            else f"none of its outputs is a 2-D float vector of {MIN_EMBEDDING_SIZE} or more values")
    raise FacecvtError(f"--pairs compares face embeddings, but {model} has {len(names)} outputs and {what} "
                       f"({listed}); name the embedding with --embedding-output NAME")


def _dims(shape) -> str:
    return "[?," + ",".join(str(d) for d in shape[1:]) + "]"
