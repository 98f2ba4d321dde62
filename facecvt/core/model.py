"""Load any accepted input into one in-memory model: a frozen .pb, a text .pbtxt, a checkpoint folder,
a SavedModel folder (core/saved_model.py), a Keras .keras or legacy .h5 file (core/keras_loader.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from facecvt.core.errors import FacecvtError, did_you_mean
from facecvt.core.graph_names import ancestors, node_map, node_name, parse_input

# placeholder names that switch a graph between training and inference, and their inference value
TRAINING_FLAG_NAMES = {"phase_train": False, "is_training": False, "training": False, "is_train": False,
                       "train_phase": False, "keras_learning_phase": False, "learning_phase": False,
                       "keep_prob": 1.0, "dropout_keep_prob": 1.0, "keep_probability": 1.0}
INPUT_OPS = {"Placeholder", "PlaceholderWithDefault", "PlaceholderV2"}
QUEUE_DEQUEUE = {"QueueDequeueUpToV2", "QueueDequeueManyV2", "QueueDequeueV2", "QueueDequeueUpTo",
                 "QueueDequeueMany"}
NOT_OUTPUTS = {"NoOp", "Assign", "AssignSub", "AssignAdd", "Const", "Placeholder", "SaveV2", "RestoreV2",
               "VariableV2", "VarHandleOp", "FIFOQueueV2", "QueueEnqueueV2", "QueueEnqueueManyV2",
               "QueueCloseV2", "AssignVariableOp", "MergeV2Checkpoints"}


@dataclass
class Model:
    """A TensorFlow graph with its image input, embedding output and training flags found."""

    graph_def: object
    path: Path
    kind: str  # "pb", "pbtxt", "checkpoint", "saved_model", "keras" or "h5"
    input_name: str
    output_name: str  # the first kept output (the embedding of an embedding model)
    input_shape: tuple  # NHWC, batch None when dynamic, height/width None when free
    training_flags: dict = field(default_factory=dict)  # name -> inference value
    extra_outputs: list = field(default_factory=list)  # other sinks, dropped by freeze
    output_names: list = field(default_factory=list)  # every kept output, in order (output_name first)
    loader: str = ""  # which reader read the file
    found: dict = field(default_factory=dict)  # what the loader found (classes, layers, name mapping)
    unfrozen_variables: list = field(default_factory=list)  # variable nodes a frozen .pb still holds

    def __post_init__(self):
        if not self.output_names:
            self.output_names = [self.output_name]

    @property
    def nodes(self) -> dict:
        return node_map(self.graph_def)


def parse_output_names(requested) -> list:
    """--output 'a,b,c' (or a list) -> ['a', 'b', 'c'] node names, in order, duplicates refused."""
    if not requested:
        return []
    items = requested.split(",") if isinstance(requested, str) else list(requested)
    names = [node_name(item.strip()) for item in items if item.strip()]
    if len(set(names)) != len(names):
        raise FacecvtError(f"--output {requested!r} names an output twice; list each output once")
    return names


def parse_input_shape(text) -> tuple | None:
    """--input-shape 'N,H,W,C' -> a 4-tuple, None for a free dimension ('-1', '?' or 'None')."""
    if text is None or text == "":
        return None
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    dims = []
    for item in items:
        if str(item) in ("-1", "?", "None", "none"):
            dims.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            value = 0
        if value < 1:
            raise FacecvtError(f"--input-shape {text!r}: each dimension is a positive number or -1/? for free")
        dims.append(value)
    if len(dims) != 4:
        raise FacecvtError(f"--input-shape {text!r}: give 4 dimensions N,H,W,C (e.g. -1,48,48,3)")
    return tuple(dims)


def _read_graph_def(path: Path):
    from google.protobuf import message, text_format

    from facecvt.core.tf_env import graph_def_class

    data = path.read_bytes()
    if not data:
        raise FacecvtError(f"{path} is empty; pass a frozen GraphDef (.pb) or a checkpoint folder")
    graph_def = graph_def_class()()
    if path.suffix == ".pbtxt":
        try:
            text_format.Merge(data.decode("utf-8"), graph_def)
            return graph_def, "pbtxt"
        except (UnicodeDecodeError, text_format.ParseError) as error:
            raise FacecvtError(f"{path} is not a text GraphDef ({error}); export the graph again") from None
    try:
        graph_def.ParseFromString(data)
    except (message.DecodeError, RuntimeWarning, ValueError):
        raise FacecvtError(f"{path} is not a TensorFlow GraphDef (it does not parse: truncated or another "
                           f"format); pass a frozen .pb, or a checkpoint folder") from None
    if not graph_def.node:
        raise FacecvtError(f"{path} holds no graph nodes; pass a frozen GraphDef (.pb) of the model")
    return graph_def, "pb"


def _checkpoint_prefix(folder: Path) -> Path:
    metas = sorted(folder.glob("*.meta"))
    if not metas:
        raise FacecvtError(f"{folder} holds no checkpoint (no .meta file); pass a folder with "
                           f".meta, .index and .data-* files, or a frozen .pb")
    meta = metas[-1]
    indexes = sorted(folder.glob("*.index"), key=lambda p: p.stat().st_mtime)
    if not indexes:
        raise FacecvtError(f"{folder} has {meta.name} but no .index/.data-* weights; copy the whole checkpoint")
    prefix = indexes[-1].with_suffix("")
    if not list(folder.glob(prefix.name + ".data-*")):
        raise FacecvtError(f"{folder} has {indexes[-1].name} but no {prefix.name}.data-* file")
    return prefix


def _freeze_checkpoint(folder: Path, output_names=None):
    """Restore a checkpoint and freeze it facenet's way; returns the frozen GraphDef."""
    from facecvt.core.checkpoint import freeze_session
    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    prefix = _checkpoint_prefix(folder)
    meta = sorted(folder.glob("*.meta"))[-1]
    graph = tf.Graph()
    try:
        with graph.as_default():
            saver = tf.compat.v1.train.import_meta_graph(str(meta), clear_devices=True)
        with tf.compat.v1.Session(graph=graph) as session:
            saver.restore(session, str(prefix))
            graph_def = graph.as_graph_def()
            outputs = output_names or _checkpoint_outputs(graph_def)
            return freeze_session(session, graph_def, outputs)
    except FacecvtError:
        raise
    except Exception as error:  # TF's own message names the tensor or file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FacecvtError(f"cannot restore the checkpoint in {folder}: {first}") from None


def _checkpoint_outputs(graph_def) -> list:
    """What to freeze from a training checkpoint: `embeddings` (and facenet's `label_batch`) when
    present, so optimizer and summary sinks are left out; otherwise every sink."""
    names = {n.name for n in graph_def.node}
    if "embeddings" in names:
        return [n for n in ("embeddings", "label_batch") if n in names]
    return _find_outputs(graph_def, None)


def _check_references(graph_def, path: Path) -> None:
    names = {n.name for n in graph_def.node}
    for node in graph_def.node:
        for ref in node.input:
            if parse_input(ref)[0] not in names:
                raise FacecvtError(
                    f"{path}: node {node.name!r} reads {ref!r}, which is not in the graph "
                    f"(a truncated or hand-edited graph); export the model again")


def _check_ops(graph_def, path: Path) -> None:
    from tensorflow.python.framework import op_def_registry

    library_functions = {f.signature.name for f in graph_def.library.function}
    for node in graph_def.node:
        if node.op not in library_functions and op_def_registry.get(node.op) is None:
            raise FacecvtError(f"{path}: node {node.name!r} uses op {node.op!r}, which this TensorFlow does "
                               f"not know; rebuild the graph with standard ops")


def _check_importable(graph_def, path: Path) -> None:
    """TensorFlow's own validation: op signatures, attribute types, input dtypes, shapes."""
    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    try:
        with tf.Graph().as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
    except Exception as error:  # TF says which node and what is wrong with it
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise FacecvtError(f"{path}: TensorFlow rejects the graph: {first}") from None


def training_flags(graph_def, overrides: dict | None = None) -> dict:
    """Placeholders that are training switches, with the value they take in inference."""
    flags = {}
    for node in graph_def.node:
        if node.op not in INPUT_OPS:
            continue
        leaf = node.name.rsplit("/", 1)[-1]
        if leaf in TRAINING_FLAG_NAMES:
            flags[node.name] = TRAINING_FLAG_NAMES[leaf]
        elif node.attr["dtype"].type == 10 and not node.attr["shape"].shape.dim:  # scalar DT_BOOL
            flags[node.name] = False
    flags.update(overrides or {})
    return flags


def _shape_of(node) -> tuple | None:
    if "shape" not in node.attr or node.attr["shape"].shape.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in node.attr["shape"].shape.dim)


def _find_input(graph_def, flags: dict, requested: str | None) -> str:
    nodes = node_map(graph_def)
    if requested:
        name = node_name(requested)
        if name not in nodes:
            raise FacecvtError(f"--input {requested!r} is not a node of the graph"
                               f"{did_you_mean(name, nodes)}")
        return name
    if "input" in nodes:
        return "input"
    candidates = [n.name for n in graph_def.node if n.op in INPUT_OPS and n.name not in flags
                  and n.attr["dtype"].type == 1 and (_shape_of(n) is None or len(_shape_of(n)) == 4)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FacecvtError("the graph has no float image placeholder; name the input with --input NAME")
    raise FacecvtError(f"the graph has several image placeholders ({', '.join(candidates)}); "
                       f"choose one with --input NAME")


def _find_outputs(graph_def, requested) -> list:
    nodes = node_map(graph_def)
    if requested:
        names = parse_output_names(requested)
        for name in names:
            if name not in nodes:
                raise FacecvtError(f"--output {name!r} is not a node of the graph{did_you_mean(name, nodes)}; "
                                   f"list the outputs with `facecvt inspect MODEL`")
        return names
    read = {node_name(r) for n in graph_def.node for r in n.input}
    sinks = [n.name for n in graph_def.node if n.name not in read and n.op not in NOT_OUTPUTS
             and not n.op.startswith("Save") and not n.op.startswith("Restore")]
    if "embeddings" in nodes and "embeddings" not in sinks:  # e.g. TF2's output Identity reads it
        sinks.insert(0, "embeddings")
    return sinks


def _trace_queue_shape(graph_def, name: str) -> tuple | None:
    """Shape of an input fed by a queue: follow Identity to the dequeue, read the queue's `shapes`."""
    nodes = node_map(graph_def)
    node = nodes.get(name)
    port = 0
    while node is not None and node.op in ("Identity", "StopGradient"):
        ref = node.input[0]
        node, port = nodes.get(node_name(ref)), parse_input(ref)[1]
    if node is None or node.op not in QUEUE_DEQUEUE:
        return None
    queue = nodes.get(node_name(node.input[0]))
    if queue is None or "shapes" not in queue.attr or len(queue.attr["shapes"].list.shape) <= port:
        return None
    dims = queue.attr["shapes"].list.shape[port].dim
    return (None, *(int(d.size) for d in dims))


def _input_shape(graph_def, name: str, requested: tuple | None = None) -> tuple:
    """The input's NHWC shape: the graph's, with `requested` (--input-shape) filling or fixing dimensions.

    Height and width may stay free (None); the channels must be known. A requested dimension that
    contradicts a fixed one of the graph is an error naming both.
    """
    node = node_map(graph_def)[name]
    shape = _shape_of(node) if node.op in INPUT_OPS else _trace_queue_shape(graph_def, name)
    if requested is not None:
        if shape is not None and len(shape) != 4:
            raise FacecvtError(f"--input-shape {_dims(requested)} has 4 dimensions but input {name!r} has "
                               f"{len(shape)} ({_dims(shape)}); give the graph's rank")
        graph = shape or (None,) * 4
        for index, (have, want) in enumerate(zip(graph, requested)):
            if have is not None and want is not None and have != want:
                raise FacecvtError(f"--input-shape {_dims(requested)} contradicts the graph's input {name!r} "
                                   f"of shape {_dims(graph)} (dimension {index}: {want} vs {have}); give "
                                   f"{_dims(graph)} or -1 where the graph is free")
        shape = tuple(w if w is not None else h for h, w in zip(graph, requested))
    if shape is None or len(shape) != 4 or shape[3] is None:
        raise FacecvtError(f"the shape of input {name!r} is not known ({shape}); give it with "
                           f"--input-shape N,H,W,C (-1 for a free dimension, e.g. -1,-1,-1,3)")
    return shape


def _dims(shape) -> str:
    return ",".join("?" if d is None else str(d) for d in shape)


VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp"}
LOADERS = {"pb": "GraphDef (binary)", "pbtxt": "GraphDef (text)",
           "checkpoint": "checkpoint (import_meta_graph + restore, frozen as facenet's freeze_graph does)"}


def _read_any(path: Path, output_name, signature, custom_objects):
    """(graph_def, kind, LoadedGraph or None) of any accepted input."""
    from facecvt.core.keras_loader import H5_SUFFIXES, KERAS_SUFFIXES, load_keras_file
    from facecvt.core.saved_model import is_saved_model, load_saved_model

    suffix = path.suffix.lower()
    if path.name == "saved_model.pb":  # the graph file of a SavedModel: read the whole folder
        path = path.parent
    if path.is_dir():
        if is_saved_model(path):
            loaded = load_saved_model(path, signature)
            return loaded.graph_def, loaded.kind, loaded
        return _freeze_checkpoint(path, parse_output_names(output_name) or None), "checkpoint", None
    if suffix in KERAS_SUFFIXES + H5_SUFFIXES:
        loaded = load_keras_file(path, custom_objects)
        return loaded.graph_def, loaded.kind, loaded
    if suffix in (".onnx", ".tflite", ".mlmodel"):
        raise FacecvtError(f"{path} is a {path.suffix} file, already exported; facecvt converts TensorFlow and "
                           f"Keras models (.pb, checkpoint or SavedModel folder, .keras, .h5)")
    try:
        graph_def, kind = _read_graph_def(path)
    except OSError as error:
        raise FacecvtError(f"cannot read {path}: {error.strerror}") from None
    return graph_def, kind, None


def unfrozen_variables(graph_def) -> list:
    """Variable nodes a 'frozen' GraphDef still holds (a freezer that kept only some scopes)."""
    return [n.name for n in graph_def.node if n.op in VARIABLE_OPS]


def unfrozen_variables_message(path: Path, names: list) -> str:
    return (f"{path} still holds {len(names)} variables that were never frozen (e.g. {names[0]!r}: the "
            f"freezer kept only some scopes as constants); use the checkpoint folder (.meta, .index, "
            f".data-*) as the input instead")


def load_model(path, *, input_name: str | None = None, output_name=None,
               set_values: dict | None = None, signature: str | None = None, custom_objects=None,
               allow_variables: bool = False, input_shape=None) -> Model:
    """Read `path` (any accepted input) and find its input, outputs and flags.

    `output_name` is one name, 'a,b,c' or a list: those outputs are kept, in that order. Without
    it an embedding model keeps `embeddings` (else its one sink) and a detector-like graph every
    sink that depends on the input. `input_shape` ('N,H,W,C' or a tuple, None/-1 free) fixes or
    frees dimensions of the input.

    `signature` chooses a SavedModel's signature (default `serving_default`); `custom_objects` is a
    Python file defining a Keras model's custom layers and functions. A GraphDef that still holds
    variables is refused (use its checkpoint) unless `allow_variables` (for `inspect`).
    """
    path = Path(path)
    if not path.exists():
        raise FacecvtError(f"{path} does not exist")
    graph_def, kind, loaded = _read_any(path, output_name, signature, custom_objects)
    variables = unfrozen_variables(graph_def)
    if variables and not allow_variables:
        raise FacecvtError(unfrozen_variables_message(path, variables))
    _check_references(graph_def, path)
    _check_ops(graph_def, path)
    _check_importable(graph_def, path)
    flags = training_flags(graph_def, _parse_set_values(graph_def, set_values))
    inp = _find_input(graph_def, flags, input_name)
    outputs = _find_outputs(graph_def, output_name)
    if loaded is not None and not output_name:
        outputs = list(loaded.outputs) + [o for o in outputs if o not in loaded.outputs]
    if output_name:
        kept, dropped = outputs, []
    else:
        kept, dropped = _rank_outputs(graph_def, inp, outputs)
    return Model(graph_def=graph_def, path=path, kind=kind, input_name=inp, output_name=kept[0], output_names=kept,
                 input_shape=_input_shape(graph_def, inp, parse_input_shape(input_shape)), training_flags=flags,
                 extra_outputs=dropped,
                 loader=loaded.loader if loaded else LOADERS[kind], found=loaded.found if loaded else {},
                 unfrozen_variables=variables)


def _rank_outputs(graph_def, input_name: str, sinks: list) -> tuple[list, list]:
    """(outputs to keep, sinks dropped): `embeddings` alone when the graph has it (facenet's
    `label_batch` and the like are dropped), else every sink that depends on the input (a
    detector's probability, box and landmarks), in graph order. Error if no sink depends on it."""
    depends = [s for s in sinks if input_name in ancestors(graph_def, [s], control=False)]
    if not depends:
        raise FacecvtError(f"no output of the graph depends on input {input_name!r}; "
                           f"name the output(s) with --output NAME[,NAME...]")
    kept = ["embeddings"] if "embeddings" in depends else depends
    return kept, [s for s in sinks if s not in kept]


def tensor_signatures(graph_def, names) -> dict:
    """{node: (shape as a list with None for unknown dims, or None for unknown rank; dtype name)} of
    each node's first output, by TensorFlow's static shape inference."""
    from facecvt.core.tf_env import import_tf

    tf = import_tf()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    found = {}
    for name in names:
        tensor = graph.get_tensor_by_name(f"{name}:0")
        shape = None if tensor.shape.rank is None else tensor.shape.as_list()
        found[name] = (shape, tensor.dtype.name)
    return found


def _parse_set_values(graph_def, set_values: dict | None) -> dict:
    """--set NAME=VALUE strings -> typed values (bool for bool placeholders, float otherwise)."""
    parsed = {}
    nodes = node_map(graph_def)
    for name, text in (set_values or {}).items():
        if name not in nodes:
            raise FacecvtError(f"--set {name}: no such node{did_you_mean(name, nodes)}")
        if nodes[name].attr["dtype"].type == 10:
            if str(text).lower() not in ("true", "false", "0", "1"):
                raise FacecvtError(f"--set {name}={text}: {name} is bool; use true or false")
            parsed[name] = str(text).lower() in ("true", "1")
        else:
            try:
                parsed[name] = float(text)
            except ValueError:
                raise FacecvtError(f"--set {name}={text}: expected a number") from None
    return parsed


def describe_training_structure(graph_def) -> dict:
    """Counts of the training structure `inspect` reports and `freeze` removes."""
    ops = [n.op for n in graph_def.node]
    count = lambda *names: sum(ops.count(o) for o in names)  # noqa: E731
    return {
        "switch": count("Switch", "RefSwitch"), "merge": count("Merge", "RefMerge"),
        "if": count("If", "StatelessIf"),
        "fused_batch_norm": count("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"),
        "moving_average_updates": count("AssignSub", "AssignAdd") + sum(
            1 for n in graph_def.node if n.op == "Sub" and re.search(r"AssignMovingAvg(_\d+)?$", n.name)),
        "dropout": sum(1 for n in graph_def.node if n.op in ("RandomUniform",) and "ropout" in n.name),
        "random_ops": count("RandomUniform", "RandomStandardNormal", "TruncatedNormal"),
        "queues": count("FIFOQueueV2", "RandomShuffleQueueV2", "PaddingFIFOQueueV2"),
        "control_edges": sum(1 for n in graph_def.node for r in n.input if r.startswith("^")),
    }
