"""The clean inference graph that every exporter takes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FrozenGraph:
    """A frozen, control-flow-free GraphDef with one image input and one embedding output.

    `input_shape` is NHWC with `None` for the batch dimension (or a fixed batch when the user
    asked for one). Exporters must keep `input_name` and `output_name`.
    """

    graph_def: object  # tensorflow.core.framework.graph_pb2.GraphDef
    input_name: str = "input"
    output_name: str = "embeddings"
    input_shape: tuple = (None, 160, 160, 3)
    embedding_size: int = 512
    notes: dict = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.input_shape[1]), int(self.input_shape[2])

    @property
    def batch(self):
        """The fixed batch size, or None for a dynamic batch."""
        return self.input_shape[0]


def concrete_function(frozen: FrozenGraph):
    """The GraphDef as a TF2 concrete function from `input_name` to {output_name: embeddings}.

    Converters that refuse a frozen .pb under TF 2.x (coremltools, the TFLite converter) take
    this. Returns (function, wrapped): keep `wrapped` alive while converting (it owns the graph).
    The input keeps the GraphDef's shape, so a dynamic batch stays dynamic.
    """
    from facecvt.core.errors import FacecvtError
    from facecvt.core.tf_env import import_tf

    tf = import_tf()

    def import_graph():
        tf.compat.v1.import_graph_def(frozen.graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    try:
        feed = wrapped.graph.get_tensor_by_name(f"{frozen.input_name}:0")
        fetch = wrapped.graph.get_tensor_by_name(f"{frozen.output_name}:0")
    except KeyError as exc:
        raise FacecvtError(f"the graph has no tensor {exc}; pass --input/--output with the real names") from None
    return wrapped.prune(feeds=[feed], fetches={frozen.output_name: fetch}), wrapped
