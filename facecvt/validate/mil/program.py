"""Load a saved Core ML ML program (.mlpackage) into coremltools' in-memory MIL program."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facecvt.core.errors import FacecvtError
from facecvt.core.ct_env import import_coremltools
from facecvt.validate.mil.dtypes import mil_dtype_name


@dataclass
class MilProgram:
    """The `main` function of an ML program, with its interface spelled out.

    `inputs` maps each input name to (shape with None for flexible dimensions, dtype name);
    `outputs` lists the output names in order; `spec` is the Core ML model protobuf.
    """

    path: Path
    function: object  # coremltools.converters.mil.mil.Function
    inputs: dict
    outputs: list
    spec: object

    @property
    def operations(self) -> list:
        """The main function's operations in execution order (constants included)."""
        return list(self.function.operations)

    def metadata(self) -> dict:
        """The model's user-defined metadata (string -> string)."""
        return dict(self.spec.description.metadata.userDefined)


def _static_shape(var) -> tuple:
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    return tuple(None if is_symbolic(d) else int(d) for d in var.shape)


def load_spec(path: Path):
    """The Core ML model protobuf of an .mlpackage folder or .mlmodel file."""
    import_coremltools()
    from coremltools.models.utils import load_spec as ct_load_spec

    try:
        return ct_load_spec(str(path))
    except Exception as exc:
        raise FacecvtError(f"cannot read the Core ML model {path}: {exc}") from exc


def load_program(path: str | Path) -> MilProgram:
    """Read the model spec and weights of an ML program and build its MIL `main` function."""
    path = Path(path)
    spec = load_spec(path)
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        raise FacecvtError(
            f"{path} is a Core ML '{kind}' model; facecvt's reference executor runs ML programs "
            f"only (export with `facecvt to-coreml`, which writes an ML program)")
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil
    from coremltools.models.utils import _try_get_weights_dir_path  # the package's weights/ folder

    weights_dir = _try_get_weights_dir_path(str(path)) if path.is_dir() else None
    try:
        program = load_mil(spec, spec.specificationVersion, file_weights_dir=weights_dir or "")
    except Exception as exc:
        raise FacecvtError(f"coremltools cannot read the ML program in {path}: {exc}") from exc
    function = program.functions.get("main")
    if function is None:
        raise FacecvtError(f"the ML program in {path} has no 'main' function "
                           f"(it has: {', '.join(program.functions)})")
    inputs = {name: (_static_shape(var), mil_dtype_name(var)) for name, var in function.inputs.items()}
    outputs = [var.name for var in function.outputs]
    return MilProgram(path=path, function=function, inputs=inputs, outputs=outputs, spec=spec)
