"""The reference: TensorFlow running the original graph exactly as it runs in inference."""

from __future__ import annotations

import numpy as np

from facecvt.validate.runners.base import Runner
from facecvt.core.threads import thread_budget

# ops whose outputs are not layers: constants, inputs, and renames of another node's value
NOT_LAYERS = frozenset({"Const", "Placeholder", "PlaceholderWithDefault", "Identity", "NoOp"})


class TensorFlowRunner(Runner):
    """Runs MODEL (raw training graph, checkpoint, clean graph, SavedModel or Keras file, the latter two
    through their loaders' frozen inference graph) with training flags at their
    inference values (`phase_train=False`), feeding the image input by name.

    A graph whose input is fixed to batch N is fed N images at a time (the last chunk padded).
    `activations` and `layers` are those of the clean graph the exporters take (MODEL frozen by
    facecvt's pipeline, or `clean` when given): its node names are the ones exports keep.
    """

    backend = "tensorflow"

    def __init__(self, path, *, input_name=None, output_name=None, set_values=None, model=None, threads=None,
                 clean=None, signature=None, custom_objects=None, input_shape=None):
        super().__init__(path)
        from facecvt.core.model import load_model

        self.model = model or load_model(path, input_name=input_name, output_name=output_name,
                                          set_values=set_values, signature=signature,
                                          custom_objects=custom_objects, input_shape=input_shape)
        self._threads = threads or thread_budget()
        self._model_session = self._session(self.model.graph_def)
        self.feeds = {f"{name}:0": value for name, value in self.model.training_flags.items()}
        self.input_tensor = f"{self.model.input_name}:0"
        self._output_names = list(self.model.output_names)
        self.output_tensors = [f"{name}:0" for name in self._output_names]
        self._clean = clean
        self._clean_session = None

    def _session(self, graph_def):
        from facecvt.core.tf_env import import_tf

        tf = import_tf()
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        config = tf.compat.v1.ConfigProto()
        # The graph as written, without grappler's rewrites: the reference computes what the model's
        # ops compute, and grappler's folded copies of the weights cost memory (released FaceNet:
        # 2.3 -> 1.7 GB peak, first batch faster, outputs bit-identical).
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        if self._threads:
            config.intra_op_parallelism_threads = self._threads
            config.inter_op_parallelism_threads = 1
        return tf.compat.v1.Session(graph=graph, config=config)

    @property
    def session(self):
        """The session running MODEL, opened again if `release` closed it."""
        if self._model_session is None:
            self._model_session = self._session(self.model.graph_def)
        return self._model_session

    def release(self) -> None:
        """Close the sessions (their memory goes back to the C heap); the runner reopens them if it runs again."""
        self.close()
        self._model_session = self._clean_session = None

    @property
    def input_shape(self) -> tuple:
        return self.model.input_shape

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_tensors, {self.input_tensor: batch, **self.feeds})

    def use_clean_graph(self, frozen) -> None:
        """Localise against `frozen` (the graph the exports were made from) instead of freezing again."""
        self._clean, self._clean_session = frozen, None

    @property
    def clean_graph(self):
        """The FrozenGraph exports are made from: MODEL through facecvt's freeze pipeline (once)."""
        if self._clean is None:
            from facecvt.graph_ops.pipeline import freeze

            self._clean = freeze(self.model).frozen
        return self._clean

    def _clean_graph_session(self):
        if self._clean_session is None:
            self._clean_session = self._session(self.clean_graph.graph_def)
        return self._clean_session

    def layers(self) -> list[tuple[str, str]]:
        """(node name, op) of the clean graph's float-valued layers, in execution order."""
        graph = self._clean_graph_session().graph
        return [(op.name, op.type) for op in graph.get_operations()
                if op.type not in NOT_LAYERS and op.outputs and op.outputs[0].dtype.is_floating]

    def activations(self, batch: np.ndarray, names=None) -> dict[str, np.ndarray]:
        """The clean graph's value at each node of `names` (default: every layer) for `batch`."""
        names = [name for name, _ in self.layers()] if names is None else list(names)
        clean = self.clean_graph
        values = self._clean_graph_session().run([f"{name}:0" for name in names],
                                         {f"{clean.input_name}:0": self.checked_batch(batch)})
        return dict(zip(names, values))

    def close(self) -> None:
        for session in (self._model_session, self._clean_session):
            if session is not None:
                session.close()
