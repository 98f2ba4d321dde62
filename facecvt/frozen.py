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
