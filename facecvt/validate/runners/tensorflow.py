"""The reference: TensorFlow running the original graph exactly as it runs in inference."""

from __future__ import annotations

import numpy as np

from facecvt.validate.runners.base import Runner


class TensorFlowRunner(Runner):
    """Runs MODEL (raw training graph, checkpoint or clean graph) with training flags at their
    inference values (`phase_train=False`), feeding the image input by name.

    A graph whose input is fixed to batch N is fed N images at a time (the last chunk padded).
    """

    backend = "tensorflow"

    def __init__(self, path, *, input_name=None, output_name=None, set_values=None, model=None, threads=None):
        super().__init__(path)
        from facecvt.core.model import load_model
        from facecvt.core.tf_env import import_tf

        tf = import_tf()
        self.model = model or load_model(path, input_name=input_name, output_name=output_name,
                                          set_values=set_values)
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(self.model.graph_def, name="")
        config = tf.compat.v1.ConfigProto()
        if threads:
            config.intra_op_parallelism_threads = threads
            config.inter_op_parallelism_threads = 1
        self.session = tf.compat.v1.Session(graph=graph, config=config)
        self.feeds = {f"{name}:0": value for name, value in self.model.training_flags.items()}
        self.input_tensor = f"{self.model.input_name}:0"
        self.output_tensor = f"{self.model.output_name}:0"

    @property
    def input_shape(self) -> tuple:
        return self.model.input_shape

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_tensor, {self.input_tensor: batch, **self.feeds})

    def close(self) -> None:
        self.session.close()
