"""Core ML exporter: the clean graph -> an ML program saved as .mlpackage (iOS 15+ / macOS 12+).

coremltools takes the frozen GraphDef object itself (not a .pb path). Handing it a concrete
function instead (a `wrap_function` of the graph) makes it run TensorFlow's graph optimizers and
freeze the function again first, which doubled the converter's peak memory (3.0 -> 1.6 GB RSS on
the released FaceNet) for the same program: the graph here is already frozen and folded. The input
keeps TF's NHWC layout (coremltools inserts the transposes to its NCHW convolutions inside the
program) and a flexible batch (1..MAX_BATCH).

With `image_input=True` the input is a Core ML image (RGB, 8-bit pixels) and the program starts
with `pixels * image_scale + image_bias`, so an app can feed camera frames directly. Core ML
images are single pictures, so such an export has a fixed batch of 1 and its program takes
NCHW; the scale and bias are also written to the model metadata (`facecvt.image_scale`,
`facecvt.image_bias`) for the Core ML runner, which maps preprocessed inputs back to pixels.
"""

from __future__ import annotations

import contextlib
import io
import traceback
from collections import Counter
from pathlib import Path

from facecvt.core.errors import FacecvtError
from facecvt.core.frozen import FrozenGraph
from facecvt.core.ct_env import import_coremltools
from facecvt.convert.coreml_speed import propagation_skipped_without_constexpr, validated_once
from facecvt.core.targets import COREML_IMAGE_BIAS, COREML_IMAGE_SCALE, TARGETS, legal_names


COMPUTE_PRECISION = {"fp32": "FLOAT32", "fp16": "FLOAT16"}
DEPLOYMENT_TARGET = "iOS15"  # the first Core ML version with ML programs (saved as .mlpackage)
MAX_BATCH = 1024
MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 1, 4096, 64  # range of a free input height/width



def _image_bias(bias) -> list:
    values = [float(bias)] * 3 if isinstance(bias, (int, float)) else [float(b) for b in bias]
    if len(values) != 3:
        raise FacecvtError(f"image_bias must be one number or three (R, G, B), got {bias!r}")
    return values


def _input_type(ct, frozen: FrozenGraph, image_input: bool, image_scale: float, image_bias: list):
    """(coremltools input type, flexible batch?) for the graph's input; a free height or width
    becomes a flexible range (MIN_SIZE..MAX_SIZE)."""
    _, height, width, channels = frozen.input_shape
    if image_input:
        if channels != 3:
            raise FacecvtError(f"image_input needs a 3-channel (RGB) input; {frozen.input_name} has {channels}")
        if frozen.free_size:
            raise FacecvtError(f"image_input needs a fixed image size; {frozen.input_name} is free: "
                               f"fix it with --input-shape -1,H,W,3")
        image = ct.ImageType(name=frozen.input_name, shape=(1, height, width, 3), scale=float(image_scale),
                             bias=image_bias, color_layout=ct.colorlayout.RGB)
        return image, False
    if frozen.batch is None:
        batch = ct.RangeDim(lower_bound=1, upper_bound=MAX_BATCH, default=1)
    else:
        batch = int(frozen.batch)
    height, width = (ct.RangeDim(lower_bound=MIN_SIZE, upper_bound=MAX_SIZE, default=DEFAULT_SIZE)
                     if d is None else int(d) for d in (height, width))
    return ct.TensorType(name=frozen.input_name, shape=(batch, height, width, channels)), frozen.batch is None


def _failing_node(exc: BaseException) -> str:
    """' at TF node NAME (OP)' or ' at MIL op NAME (TYPE)' for the innermost op coremltools was on."""
    found = ""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        node = frame.f_locals.get("node")
        op = frame.f_locals.get("op")
        if node is not None and hasattr(node, "op") and hasattr(node, "original_node"):
            found = f" at TF node {node.name} ({node.op})"
        elif op is not None and hasattr(op, "op_type") and hasattr(op, "outputs"):
            found = f" at MIL op {op.name} ({op.op_type})"
    return found


@contextlib.contextmanager
def _graph_def_formatted_briefly(graph_def):
    """Within the block, formatting a GraphDef gives one line instead of its text with every weight.

    coremltools' loader formats the model it was given into a log message before checking the log
    level; for a GraphDef that is the text of every weight (released FaceNet: 10 s, 270 MB).
    """
    cls = type(graph_def)
    had_own = "__format__" in cls.__dict__
    previous = cls.__dict__.get("__format__")
    cls.__format__ = lambda graph, spec: f"GraphDef ({len(graph.node)} nodes)"
    try:
        yield
    finally:
        if had_own:
            cls.__format__ = previous
        else:
            del cls.__format__


def _convert(ct, input_type, frozen: FrozenGraph, precision: str):
    converted = {}
    # coremltools draws progress bars on stderr; facecvt prints its own summary.
    with contextlib.redirect_stderr(io.StringIO()), _graph_def_formatted_briefly(frozen.graph_def), \
            validated_once(lambda: converted["model"]._mil_program), propagation_skipped_without_constexpr():
        converted["model"] = ct.convert(
            frozen.graph_def, source="tensorflow", convert_to="mlprogram",
            inputs=[input_type], outputs=[ct.TensorType(name=name) for name in frozen.output_names],
            compute_precision=getattr(ct.precision, COMPUTE_PRECISION[precision]),
            minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
            skip_model_load=True)
    return converted["model"]


def _named_features(ct, model, input_name: str, output_names: list):
    """The model with its input called `input_name` and its outputs `output_names`, in order.

    coremltools names features after TF ops (and sanitises some names its own way), and Core ML
    refuses names outside [A-Za-z_][A-Za-z0-9_]*: the caller passes names already made legal.
    """
    spec = model.get_spec()
    renames = [(spec.description.input[0].name, input_name),
               *((output.name, wanted) for output, wanted in zip(spec.description.output, output_names, strict=True))]
    if all(current == wanted for current, wanted in renames):
        return model
    for current, wanted in renames:
        if current != wanted:
            ct.models.utils.rename_feature(spec, current, wanted)
    return ct.models.MLModel(spec, weights_dir=model.weights_dir, skip_model_load=True)


def _mil_op_counts(model) -> dict:
    """{MIL op type: count} of the program's main function, constants left out."""
    operations = model._mil_program.functions["main"].operations
    return dict(Counter(op.op_type for op in operations if op.op_type != "const").most_common())


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def write(frozen: FrozenGraph, tmp_path: Path, siblings: dict, precision: str = "fp32",
          image_input: bool = False, image_scale: float = 1 / 128, image_bias=-127.5 / 128) -> dict:
    """Convert `frozen` with coremltools to an ML program and save it at `tmp_path` (.mlpackage)."""
    ct = import_coremltools()
    bias = _image_bias(image_bias) if image_input else None
    input_type, flexible = _input_type(ct, frozen, image_input, image_scale, bias)
    try:
        model = _convert(ct, input_type, frozen, precision)
    except FacecvtError:
        raise
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FacecvtError(f"coremltools cannot convert the graph{_failing_node(exc)}: {message}") from exc
    mil_ops = _mil_op_counts(model)  # before any rename: a model rebuilt from its spec has no MIL program
    names = legal_names(TARGETS["coreml"], [frozen.input_name, *frozen.output_names])
    model = _named_features(ct, model, names[frozen.input_name], [names[o] for o in frozen.output_names])
    model.short_description = (f"facecvt: {', '.join(frozen.output_names)} ({precision})" if frozen.multi_output
                               else f"facecvt: {frozen.embedding_size}-D face embeddings ({precision})")
    details = {
        "precision": precision,
        "compute_precision": COMPUTE_PRECISION[precision],
        "deployment_target": DEPLOYMENT_TARGET,
        "mil_ops": mil_ops,
        "flexible_batch": flexible,
        "flexible_size": frozen.free_size and not image_input,
        "input_type": "image" if image_input else "tensor",
        "names": {legal: original for original, legal in names.items()},  # export-side name -> graph's name
    }
    if image_input:
        model.user_defined_metadata[COREML_IMAGE_SCALE] = repr(float(image_scale))
        model.user_defined_metadata[COREML_IMAGE_BIAS] = ",".join(repr(b) for b in bias)
        details.update(image_scale=float(image_scale), image_bias=bias)
    model.save(str(tmp_path))
    details["size_bytes"] = _folder_size(tmp_path)
    return details
