"""The clean inference graph that every exporter takes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FrozenGraph:
    """A frozen, control-flow-free GraphDef with one image input and one or more outputs.

    `input_shape` is NHWC with `None` for the batch dimension (or a fixed batch when the user
    asked for one) and `None` for a free height/width (a fully convolutional detector).
    `output_names` are kept in this order by every exporter; `output_shapes` maps each to its
    shape (None for unknown dimensions). `output_name` is the first output and `embedding_size`
    its last dimension: the single-output embedding model's view.
    """

    graph_def: object  # tensorflow.core.framework.graph_pb2.GraphDef
    input_name: str = "input"
    output_name: str = "embeddings"
    input_shape: tuple = (None, 160, 160, 3)
    embedding_size: int = 512
    notes: dict = field(default_factory=dict)
    output_names: tuple = ()
    output_shapes: dict = field(default_factory=dict)  # output name -> shape tuple (None = unknown dim)

    def __post_init__(self):
        if not self.output_names:
            self.output_names = (self.output_name,)
        self.output_names = tuple(self.output_names)
        self.output_name = self.output_names[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width); only for a model whose size is fixed (see `free_size`)."""
        return int(self.input_shape[1]), int(self.input_shape[2])

    @property
    def free_size(self) -> bool:
        """True when the input's height or width is free (any size runs)."""
        return self.input_shape[1] is None or self.input_shape[2] is None

    def sizes_to_run(self, free_sizes) -> list[tuple[int, int]]:
        """(H, W) sizes to run the model at: `free_sizes` with the fixed dimension kept where only
        one of height and width is free (duplicates dropped)."""
        height, width = self.input_shape[1:3]
        return list(dict.fromkeys((height or h, width or w) for h, w in free_sizes))

    @property
    def multi_output(self) -> bool:
        return len(self.output_names) > 1

    @property
    def batch(self):
        """The fixed batch size, or None for a dynamic batch."""
        return self.input_shape[0]


def concrete_function(frozen: FrozenGraph):
    """The GraphDef as a TF2 concrete function from `input_name` to {output name: tensor} (all outputs).

    Converters that refuse a frozen .pb under TF 2.x (coremltools, the TFLite converter) take
    this. Returns (function, wrapped): keep `wrapped` alive while converting (it owns the graph).
    The input keeps the GraphDef's shape, so a dynamic batch (and a free height/width) stays dynamic.
    """
    from facecvt.core.errors import FacecvtError
    from facecvt.core.tf_env import import_tf

    tf = import_tf()

    def import_graph():
        tf.compat.v1.import_graph_def(frozen.graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    try:
        feed = wrapped.graph.get_tensor_by_name(f"{frozen.input_name}:0")
        fetches = {name: wrapped.graph.get_tensor_by_name(f"{name}:0") for name in frozen.output_names}
    except KeyError as exc:
        raise FacecvtError(f"the graph has no tensor {exc}; pass --input/--output with the real names") from None
    return wrapped.prune(feeds=[feed], fetches=fetches), wrapped
