"""Subtly broken copies of an export, edited in the artifact's own file format.

One convolution's weights are found in the artifact's bytes (in any of the layouts the
converters store them: TensorFlow's HWIO, ONNX/Core ML's OIHW, TFLite's OHWI) and replaced in
place: scaled by 3 % ("scaled", a mid-network conv), or with the input channels reversed
("bgr", the first conv: the export then reads RGB images as BGR).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

LAYOUTS = {"HWIO": (0, 1, 2, 3), "OIHW": (3, 2, 0, 1), "OHWI": (3, 0, 1, 2)}


def target_conv(frozen, how: str) -> tuple[str, np.ndarray]:
    """(name, HWIO weights) of the conv a `how` fault edits: the middle Conv2D, or the first one."""
    from facecvt.graph_ops.graph import const_value, node_map

    nodes = node_map(frozen.graph_def)
    convs = [n for n in frozen.graph_def.node if n.op == "Conv2D"]
    conv = convs[len(convs) // 2] if how == "scaled" else convs[0]
    weights = nodes[conv.input[1].split(":")[0]]
    while weights.op == "Identity":
        weights = nodes[weights.input[0].split(":")[0]]
    return conv.name, np.asarray(const_value(weights), dtype=np.float32)


def broken_copy(artifact: Path, frozen, how: str, out: Path) -> tuple[Path, str]:
    """Copy `artifact` (with its .pbtxt, or a whole .mlpackage) to `out` and apply the fault in the copy.

    Returns (the broken artifact, the name of the conv that was edited).
    """
    artifact, out = Path(artifact), Path(out)
    if artifact.is_dir():
        shutil.copytree(artifact, out)
        files = sorted(p for p in out.rglob("*.bin"))
    else:
        shutil.copyfile(artifact, out)
        if artifact.with_suffix(".pbtxt").exists():
            shutil.copyfile(artifact.with_suffix(".pbtxt"), out.with_suffix(".pbtxt"))
        files = [out]
    name, weights = target_conv(frozen, how)
    changed = weights * np.float32(1.03) if how == "scaled" else weights[:, :, ::-1, :]
    for file in files:
        data = file.read_bytes()
        for axes in LAYOUTS.values():
            old = np.ascontiguousarray(weights.transpose(axes)).tobytes()
            if data.count(old) == 1:
                new = np.ascontiguousarray(changed.transpose(axes), dtype=np.float32).tobytes()
                file.write_bytes(data.replace(old, new))
                return out, name
    raise AssertionError(f"the weights of {name} are not stored as float32 in any known layout in {artifact}")
