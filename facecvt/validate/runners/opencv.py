"""Run an OpenCV-DNN model on the CPU: a TensorFlow .pb (and optional .pbtxt), or an NCHW ONNX model."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from facecvt.core.errors import FacecvtError
from facecvt.validate.runners.base import Runner
from facecvt.core.threads import thread_budget

ENGINES = ("auto", "new", "classic")
ONNX_SUFFIX = ".onnx"


def is_onnx(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ONNX_SUFFIX


def default_engine(path: str | Path) -> str:
    """The engine users are told to run: the new one for ONNX (the classic engine mis-reads
    facecvt's ONNX silently), OpenCV's own choice for a TensorFlow graph."""
    return "new" if is_onnx(path) else "auto"


class OpenCVRunner(Runner):
    """cv2.dnn.readNetFromTensorflow(pb[, pbtxt]) or readNetFromONNX(onnx) on DNN_BACKEND_OPENCV / CPU.

    `threads` sets OpenCV's (process-wide) thread count until close(); `engine` picks OpenCV 5's
    graph engine: "new", "classic", or "auto" (OpenCV's choice: the new engine, falling back to the
    classic one); None runs `default_engine(path)`. A graph whose input has a fixed batch is run in
    chunks of that batch.
    `output_names` are the nodes (ONNX: tensors) `forward` returns, in order (default: the graph's
    sinks, or the ONNX graph's outputs; `to-opencv` records the graph's order for a multi-output net).
    """

    backend = "opencv"

    def __init__(self, path: str | Path, pbtxt: str | Path | None = None, threads: int | None = None,
                 engine: str | None = None, output_names: list | None = None):
        super().__init__(path)
        import cv2

        engine = engine or default_engine(path)
        if engine not in ENGINES:
            raise FacecvtError(f"unknown OpenCV engine {engine!r}; use one of {', '.join(ENGINES)}")
        self.pbtxt = Path(pbtxt) if pbtxt else None
        for needed in (self.path, self.pbtxt):
            if needed is not None and not needed.is_file():
                raise FacecvtError(f"{needed} does not exist")
        self.engine = engine
        if is_onnx(self.path):
            self.input_name, self._input_shape = onnx_input(self.path)
        else:
            self.input_name, shape = graph_input(self.path)
            self._input_shape = tuple(None if d is None or d < 0 else d for d in shape) if shape else (None,) * 4
        self.net = read_net(self.path, self.pbtxt, engine)
        if is_onnx(self.path):  # OpenCV's ONNX importer names layers after the tensors they compute
            self._output_names = list(output_names or onnx_outputs(self.path))
            self._layers = list(self._output_names)
        else:
            nodes = graph_nodes(self.path)
            self._output_names = list(output_names or graph_sinks(nodes))
            self._layers = [opencv_layer(self.net, nodes, name, self.path) for name in self._output_names]
        self._threads_before = cv2.getNumThreads()
        threads = threads or thread_budget()
        if threads:
            cv2.setNumThreads(int(threads))

    def describe(self) -> str:
        return f"{self.backend}:{self.path}" + (f" ({self.engine} engine)" if self.engine != "auto" else "")

    @property
    def executed_by(self) -> str:
        """The engine that ran, when it was chosen (verify's tables say `opencv (opencv new engine)`)."""
        return self.backend if self.engine == "auto" else f"opencv {self.engine} engine"

    @property
    def input_shape(self) -> tuple:
        return self._input_shape

    @property
    def fixed_batch(self) -> int | None:
        """The batch size baked into the input, or None when any batch runs in one forward."""
        return self._input_shape[0]

    def _infer(self, chunk: np.ndarray) -> list[np.ndarray]:
        blob = np.ascontiguousarray(chunk.transpose(0, 3, 1, 2))
        import cv2

        try:
            self.net.setInput(blob)
            outputs = self.net.forward(self._layers)
        except cv2.error as error:
            named = _failing_node(str(error))  # layers are created lazily: "Can't create layer ..."
            layer = named if named[0] else locate_failing_layer(self.path, self.pbtxt, blob)
            raise opencv_failure("run", self.path, error, layer=layer) from None
        if not is_onnx(self.path):  # a TF graph's NCHW feature maps back to TensorFlow's NHWC layout
            outputs = [out.transpose(0, 2, 3, 1) if out.ndim == 4 else out for out in outputs]
        for out in outputs:
            if out.shape[0] != len(chunk):
                raise FacecvtError(
                    f"OpenCV returned {out.shape[0]} rows for a batch of {len(chunk)} from {self.path}: a Reshape "
                    "in the graph has the batch baked in; convert it with `facecvt to-opencv`")
        return outputs

    def activations(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The output of every layer (`net.forward(names)`), 4-D ones turned from NCHW to NHWC.

        OpenCV 5's new engine returns only the graph's outputs, so the same files are read with
        the classic engine, which can stop at any layer.
        """
        batch = self.checked_batch(batch)
        net = self.net if self.engine == "classic" else read_net(self.path, self.pbtxt, "classic")
        names = list(net.getLayerNames())
        net.setInput(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
        values = net.forward(names)
        return {name: value.transpose(0, 2, 3, 1) if value.ndim == 4 else value
                for name, value in zip(names, values)}

    def close(self) -> None:
        import cv2

        self.net = None
        cv2.setNumThreads(self._threads_before)


def engine_flag(engine: str) -> int:
    """cv2.dnn's constant for an engine name (the new engine is ENGINE_OPENCV after OpenCV 5.0)."""
    import cv2

    new = getattr(cv2.dnn, "ENGINE_NEW", None)
    flags = {"auto": cv2.dnn.ENGINE_AUTO, "classic": cv2.dnn.ENGINE_CLASSIC,
             "new": new if new is not None else cv2.dnn.ENGINE_OPENCV}
    return flags[engine]


def read_net(path: Path, pbtxt: Path | None, engine: str = "auto"):
    """The cv2.dnn.Net of a TensorFlow `path` (+ `pbtxt`) or an ONNX `path` on `engine`; its import
    errors turned into a FacecvtError naming the node."""
    import cv2

    with _captured_stderr() as log:
        try:
            if is_onnx(path):
                net = cv2.dnn.readNetFromONNX(str(path), engine_flag(engine))
            else:
                net = cv2.dnn.readNetFromTensorflow(str(path), str(pbtxt) if pbtxt else "", engine_flag(engine))
        except cv2.error as error:
            failure = error
        else:
            failure = None
    if failure is not None:
        raise opencv_failure("load", path, failure, log=log.text) from None
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    # DNN_TARGET_CPU is the default target; setting it makes the new engine warn that it has no targets.
    return net


def opencv_failure(action: str, path: Path, error, log: str = "", layer: tuple | None = None) -> FacecvtError:
    """One line: what OpenCV could not do, at which node or layer, and why (from its own message)."""
    name, kind = layer or _failing_node(f"{log}\n{error}")
    where = f" at {name!r} ({kind})" if name and kind else f" at {name!r}" if name else ""
    return FacecvtError(
        f"OpenCV cannot {action} {path}{where}: {_reason(error)}; "
        "`facecvt to-opencv` rewrites the patterns OpenCV 5 cannot read, the rest it does not support")


_NODE_PATTERNS = (
    re.compile(r"node='([^']+)' of type='([^']+)'"),  # importer log line: the most precise
    re.compile(r'Can\'t create layer "([^"]+)" of type "([^"]+)"'),
    re.compile(r"Can't create layer (\S+) with type (\S+)"),
    re.compile(r"Can't handle node='([^']+)'()"),
    re.compile(r"Input layer not found: (\S+)()"),
    re.compile(r"Input \[[^\]]*\] for node \[([^\]]+)\]()"),
)


def _failing_node(text: str) -> tuple[str | None, str | None]:
    """(node, op) named in OpenCV's message or log, the last mention winning; (None, None) if none."""
    for pattern in _NODE_PATTERNS:
        found = pattern.findall(text)
        if found:
            name, kind = found[-1]
            return name, kind or None
    return None, None


def _reason(error) -> str:
    """OpenCV's own explanation, without the source path and function name."""
    text = " ".join(line.strip(" >") for line in str(error).strip().splitlines())
    text = re.sub(r"^OpenCV\([^)]*\) \S+: error: \([^)]*\)\s*", "", text)
    text = re.sub(r"\s*in function '[^']*'", "", text).strip()
    return text if len(text) <= 200 else text[:197] + "..."


def locate_failing_layer(pb: Path, pbtxt: Path | None, blob: np.ndarray) -> tuple[str, str] | None:
    """(layer, OpenCV type) of the first layer whose forward fails, by bisection with the classic engine.

    OpenCV's run-time errors do not name the layer; the classic engine can run up to any layer.
    None when the classic engine runs the whole graph (the failure is the new engine's alone).
    """
    import cv2

    try:
        net = read_net(pb, pbtxt, "classic")
    except FacecvtError:
        return None
    names = list(net.getLayerNames())

    def fails(index: int) -> bool:
        try:
            net.setInput(blob)
            net.forward(names[index])
        except cv2.error:
            return True
        return False

    if not names or not fails(len(names) - 1) or fails(0):  # everything failing names nothing
        return None
    low, high = 0, len(names) - 1  # fails(high) holds throughout
    while low < high:
        middle = (low + high) // 2
        if fails(middle):
            high = middle
        else:
            low = middle + 1
    return names[high], f"OpenCV {net.getLayer(names[high]).type}"


class _Capture:
    text = ""


@contextlib.contextmanager
def _captured_stderr():
    """Collect what native code writes to fd 2: OpenCV logs the node it failed on there, not in the error."""
    capture = _Capture()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield capture
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            capture.text = log.read().decode("utf-8", "replace")


def onnx_outputs(path: Path) -> list[str]:
    """The names of an ONNX model's graph outputs, in order."""
    import onnx

    return [value.name for value in onnx.load(str(path), load_external_data=False).graph.output]


def onnx_input(path: Path) -> tuple[str, tuple]:
    """(name, NHWC shape with None for free dimensions) of an ONNX model's NCHW image input."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends: not an ONNX file
        raise FacecvtError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    weights = {init.name for init in graph.initializer}
    value = next((v for v in graph.input if v.name not in weights), None)
    if value is None:
        raise FacecvtError(f"{path} has no graph input")
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)
    if len(dims) != 4:
        raise FacecvtError(f"{path} takes a rank-{len(dims)} input {value.name!r}; OpenCV runs image models "
                           "with an NCHW input")
    n, c, h, w = dims
    if c not in (1, 3, None) and dims[3] in (1, 3):
        raise FacecvtError(f"{path} takes NHWC input (shape {list(dims)}), but OpenCV feeds NCHW blobs; "
                           "export it for OpenCV with `facecvt to-opencv --format onnx`")
    return value.name, (n, h, w, c)


# ---------------------------------------------------------------------------------------------
# the input Placeholder, read from the .pb's protobuf wire format (no TensorFlow import needed)


def graph_input(pb: Path) -> tuple[str | None, tuple | None]:
    """(name, shape) of the graph's image input: the Placeholder named 'input', else the first non-bool one.

    The shape has -1 for unknown dimensions, or is None when the Placeholder has no shape.
    """
    placeholders = []
    for node in _fields(memoryview(Path(pb).read_bytes())):
        if node[0] != 1:  # GraphDef.node
            continue
        found = _placeholder(node[2])
        if found is not None:
            placeholders.append(found)
    usable = [p for p in placeholders if p[2] != 10]  # 10 = DT_BOOL: a training flag
    chosen = next((p for p in usable if p[0] == "input"), usable[0] if usable else None)
    return (chosen[0], chosen[1]) if chosen else (None, None)


def graph_nodes(pb: Path) -> dict:
    """{node name: (op, [input refs])} of every node of the .pb, in file order."""
    nodes = {}
    for number, _, node in _fields(memoryview(Path(pb).read_bytes())):
        if number != 1:  # GraphDef.node
            continue
        name, kind, inputs = None, None, []
        for field, _, value in _fields(node):
            if field == 1:
                name = bytes(value).decode()
            elif field == 2:
                kind = bytes(value).decode()
            elif field == 3:
                inputs.append(bytes(value).decode())
        nodes[name] = (kind, inputs)
    return nodes


def _node_of(ref: str) -> str:
    return ref.lstrip("^").split(":")[0]


def graph_sinks(nodes: dict) -> list:
    """The graph's outputs: nodes nothing reads (constants and placeholders aside), in file order."""
    read = {_node_of(ref) for _, inputs in nodes.values() for ref in inputs}
    return [name for name, (kind, _) in nodes.items() if name not in read and kind not in ("Const", "Placeholder")]


def opencv_layer(net, nodes: dict, name: str, path: Path) -> str:
    """The OpenCV layer computing node `name`: OpenCV names a fused layer after its first node
    (a Conv2D or MatMul that absorbed the BiasAdd the graph calls the output), so the node's
    data inputs are followed until a layer of that name exists."""
    layers = set(net.getLayerNames())
    current = name
    while current not in layers and current in nodes and nodes[current][1]:
        current = _node_of(nodes[current][1][0])
    if current not in layers:
        raise FacecvtError(f"OpenCV has no layer for output {name!r} of {path}; "
                           f"pass the graph's output names (facecvt inspect lists them)")
    return current


def _placeholder(node: memoryview):
    """(name, shape, dtype) if this NodeDef is a Placeholder, else None (stops reading at the op)."""
    name, shape, dtype = None, None, None
    for number, _, value in _fields(node):
        if number == 1:
            name = bytes(value).decode()
        elif number == 2 and bytes(value) != b"Placeholder":
            return None
        elif number == 5:  # attr map entry: key = 1, value = 2 (AttrValue)
            entry = {n: v for n, _, v in _fields(value)}
            key = bytes(entry.get(1, b"")).decode()
            if key == "shape":
                shape = _shape(entry.get(2, b""))
            elif key == "dtype":
                dtype = next((v for n, _, v in _fields(entry.get(2, b"")) if n == 6), None)
    return name, shape, dtype


def _shape(attr_value: memoryview) -> tuple | None:
    """The dims of AttrValue.shape (field 7), -1 for unknown; None for an unknown rank."""
    for number, _, shape in _fields(attr_value):
        if number != 7:
            continue
        fields = list(_fields(shape))
        if any(n == 3 and v for n, _, v in fields):  # unknown_rank
            return None
        dims = []
        for n, _, dim in fields:
            if n == 2:  # TensorShapeProto.dim; Dim.size = 1
                size = next((v for m, _, v in _fields(dim) if m == 1), 0)
                dims.append(size - (1 << 64) if size >= 1 << 63 else size)
        return tuple(dims)
    return None


def _fields(buffer: memoryview):
    """(field number, wire type, value) of one protobuf message; length-delimited values as views."""
    position, end = 0, len(buffer)
    while position < end:
        key, position = _varint(buffer, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(buffer, position)
        elif wire == 2:
            size, position = _varint(buffer, position)
            value, position = buffer[position:position + size], position + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, position = buffer[position:position + size], position + size
        else:
            raise FacecvtError(f"cannot read the graph input: unsupported protobuf wire type {wire}")
        yield number, wire, value


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
