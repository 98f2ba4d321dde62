"""SavedModel folders -> a frozen GraphDef of one signature (`serving_default` unless asked).

- TF2 (`tf.saved_model.save`, Keras `model.export`, tf.keras `model.save(folder)`): the
  signature's concrete function, variables turned into constants; the Placeholders keep the
  signature's input names and each output node is named after its signature key.
- TF1 (`SavedModelBuilder` / `simple_save`, tag `serve`): the whole graph is restored in a session
  and frozen the way facenet freezes a checkpoint, so a training-mode graph keeps its flags and
  conds for the freeze pipeline; node names stay the graph's own.
"""

from __future__ import annotations

from pathlib import Path

from facecvt.core.errors import FacecvtError, did_you_mean
from facecvt.core.function_graph import LoadedGraph, frozen_graph_def

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"


def is_saved_model(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt"))


def _read_saved_model_proto(folder: Path):
    from google.protobuf import message, text_format

    from facecvt.core.tf_env import import_tf

    import_tf()
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    binary = folder / "saved_model.pb"
    try:
        if binary.is_file():
            proto.ParseFromString(binary.read_bytes())
        else:
            text_format.Merge((folder / "saved_model.pbtxt").read_text(), proto)
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError, ValueError):
        raise FacecvtError(f"{folder}/saved_model.pb does not parse (truncated or another format); "
                           f"save the model again") from None
    if not proto.meta_graphs:
        raise FacecvtError(f"{folder} holds a SavedModel without graphs; save the model again")
    return proto


def _meta_graph(proto, folder: Path):
    """The `serve` meta graph (or the only one)."""
    for meta in proto.meta_graphs:
        if SERVE_TAG in meta.meta_info_def.tags:
            return meta
    if len(proto.meta_graphs) == 1:
        return proto.meta_graphs[0]
    tags = [",".join(m.meta_info_def.tags) for m in proto.meta_graphs]
    raise FacecvtError(f"{folder} has no graph tagged 'serve' (tags: {'; '.join(tags)}); save it with "
                       f"tags=['serve']")


def _check_signature(meta, folder: Path, signature: str) -> None:
    names = sorted(k for k in meta.signature_def if not k.startswith("__"))
    if signature not in meta.signature_def:
        listed = ", ".join(names) if names else "none"
        raise FacecvtError(f"{folder} has no signature {signature!r} (it has: {listed}); choose one with "
                           f"--signature NAME{did_you_mean(signature, names)}")


def load_saved_model(folder: Path, signature: str | None = None) -> LoadedGraph:
    """Read the SavedModel in `folder` and freeze `signature`."""
    signature = signature or DEFAULT_SIGNATURE
    proto = _read_saved_model_proto(folder)
    meta = _meta_graph(proto, folder)
    _check_signature(meta, folder, signature)
    if meta.object_graph_def.nodes:
        return _load_tf2(folder, meta, signature)
    return _load_tf1(folder, meta, signature)


def _load_tf2(folder: Path, meta, signature: str) -> LoadedGraph:
    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    try:
        loaded = tf.saved_model.load(str(folder), tags=list(meta.meta_info_def.tags) or None)
    except (ValueError, OSError, KeyError, tf.errors.OpError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise FacecvtError(f"TensorFlow cannot load the SavedModel in {folder}: {first}") from None
    function = loaded.signatures[signature]
    outputs = function.structured_outputs
    output_keys = sorted(outputs) if isinstance(outputs, dict) else [f"output_{i}" for i in
                                                                     range(len(tf.nest.flatten(outputs)))]
    graph_def, mapping = frozen_graph_def(function, output_keys)
    placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
    inputs = [t.name.split(":")[0] for t in function.inputs if t.name.split(":")[0] in placeholders]
    found = {"format": "TF2 SavedModel", "signature": signature,
             "signatures": sorted(k for k in meta.signature_def if not k.startswith("__")),
             "inputs": {name: spec.name for name, spec in function.structured_input_signature[1].items()},
             "outputs": {name: key for name, key in zip(mapping, output_keys)},
             "keras_metadata": (folder / "keras_metadata.pb").is_file()}
    return LoadedGraph(graph_def=graph_def, kind="saved_model", loader=f"tf.saved_model.load (TF2, signature "
                       f"{signature!r})", inputs=inputs, outputs=list(mapping), found=found)


def _load_tf1(folder: Path, meta, signature: str) -> LoadedGraph:
    from facecvt.core.checkpoint import freeze_session
    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    definition = meta.signature_def[signature]
    input_names = [info.name.split(":")[0] for info in definition.inputs.values()]
    output_names = [definition.outputs[key].name.split(":")[0] for key in sorted(definition.outputs)]
    graph = tf.Graph()
    try:
        with tf.compat.v1.Session(graph=graph) as session:
            tf.compat.v1.saved_model.loader.load(session, list(meta.meta_info_def.tags), str(folder))
            graph_def = freeze_session(session, graph.as_graph_def(), output_names)
    except (ValueError, OSError, KeyError, tf.errors.OpError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise FacecvtError(f"TensorFlow cannot restore the SavedModel in {folder}: {first}") from None
    found = {"format": "TF1 SavedModel", "signature": signature,
             "signatures": sorted(k for k in meta.signature_def if not k.startswith("__")),
             "inputs": {key: info.name for key, info in definition.inputs.items()},
             "outputs": {key: info.name for key, info in definition.outputs.items()}}
    return LoadedGraph(graph_def=graph_def, kind="saved_model", loader=f"tf.compat.v1 SavedModel loader (TF1, "
                       f"tag 'serve', signature {signature!r})", inputs=input_names, outputs=output_names,
                       found=found)
