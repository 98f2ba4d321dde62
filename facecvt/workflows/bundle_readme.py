"""The README.md of an export bundle: one usage snippet per artifact."""

from __future__ import annotations

# Both OpenCV formats take the same blob; only the reading line differs.
OPENCV_SNIPPET = '''```python
import cv2, numpy as np
net = {read}
faces = [cv2.imread(path) for path in face_crop_paths]  # BGR uint8, as OpenCV reads them
# fixed preprocessing (x - 127.5) / 128 on RGB: swapRB turns OpenCV's BGR into the RGB the model wants
blob = cv2.dnn.blobFromImages(faces, scalefactor=1 / 128, size=({{w}}, {{h}}), mean=(127.5, 127.5, 127.5), swapRB=True)
net.setInput(blob)
embeddings = net.forward()  # (N, {{d}}), L2-normalised
```'''

# Which OpenCV reads which format (said under each OpenCV artifact of the bundle).
OPENCV_VERSIONS = {
    "opencv": "For every OpenCV with the TensorFlow importer (`readNetFromTensorflow`: 3.x, 4.x, 5.0; checked "
              "here with the OpenCV in `manifest.json`'s versions). OpenCV 5 keeps that importer for now, but "
              "its removal is proposed upstream: on OpenCV 5 prefer the ONNX export (`--targets opencv-onnx`).",
    "opencv-onnx": "Needs OpenCV 5.0 or later on its **new engine** (`cv2.dnn.ENGINE_NEW`; later 5.x releases "
                   "call it `ENGINE_OPENCV`). The classic engine (OpenCV 4.x's importer, or "
                   "`ENGINE_CLASSIC` in 5.x) loads this file but computes wrong embeddings without any "
                   "error; for OpenCV 4.x use the `.pb` export (`--targets opencv`).",
}

SNIPPETS = {
    "opencv": OPENCV_SNIPPET.format(read='cv2.dnn.readNetFromTensorflow("{file}", "{sibling}")'),
    "opencv-onnx": OPENCV_SNIPPET.format(read='cv2.dnn.readNetFromONNX("{file}", cv2.dnn.ENGINE_NEW)'),
    "onnx": '''```python
import numpy as np, onnxruntime as ort
session = ort.InferenceSession("{file}", providers=["CPUExecutionProvider"])
batch = (np.stack(faces).astype(np.float32) - 127.5) / 128  # (N, {h}, {w}, 3) RGB
embeddings = session.run(["{output}"], {{"{input}": batch}})[0]  # (N, {d})
```''',
    "tflite": '''```python
import numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path="{file}")
batch = (np.stack(faces).astype(np.float32) - 127.5) / 128  # (N, {h}, {w}, 3) RGB
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
interpreter.resize_tensor_input(inp["index"], batch.shape)
interpreter.allocate_tensors()
interpreter.set_tensor(inp["index"], batch)
interpreter.invoke()
embeddings = interpreter.get_tensor(out["index"])  # (N, {d})
```''',
    "coreml": '''```swift
import CoreML
let model = try MLModel(contentsOf: compiledURL)  // xcrun coremlcompiler compile {file} .
// input "{input}": MLMultiArray float32 [N, {h}, {w}, 3], RGB, (pixel - 127.5) / 128
let features = try MLDictionaryFeatureProvider(dictionary: ["{input}": MLFeatureValue(multiArray: batch)])
let embeddings = try model.prediction(from: features).featureValue(for: "{output}")!.multiArrayValue!  // [N, {d}]
```''',
}


def _outputs_table(manifest: dict) -> list:
    """A row per artifact and output: how far it is from TensorFlow, by the measure its kind is judged by."""
    lines = ["| file | target | precision | output | max abs diff | diff / max ref | max px | result |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    for a in manifest["artifacts"]:
        for row in a["verify"].get("outputs", []):
            lines.append(f"| `{a['files'][0]['file']}` | {a['target']} | {a['precision']} | `{row['name']}` | "
                         f"{fmt(row.get('max_abs'), '.2e')} | {fmt(row.get('rel_max_abs'), '.2e')} | "
                         f"{fmt(row.get('max_pixels'), '.3f')} | {'pass' if row['pass'] else 'FAIL'} |")
    return lines


def bundle_readme(manifest: dict) -> str:
    lines = [f"# Export bundle of `{manifest['source']['path']}`", "",
             f"Made by facecvt {manifest['facecvt']}; every artifact below was verified against the original "
             f"TensorFlow model on {manifest['inputs']['count']} inputs ({manifest['inputs']['source']}). "
             "Hashes, versions and the full verification results are in `manifest.json`.", ""]
    if manifest.get("distance_threshold") is not None:
        lines += [f"Same person when the squared L2 distance of two embeddings is below "
                  f"**{manifest['distance_threshold']:.4f}** (the threshold separating the verification pairs).", ""]
    if len(manifest.get("outputs") or []) > 1:
        lines += _outputs_table(manifest)
    else:
        lines += ["| file | target | precision | max abs diff | min cosine |", "|---|---|---|---|---|"]
        for a in manifest["artifacts"]:
            lines.append(f"| `{a['files'][0]['file']}` | {a['target']} | {a['precision']} | "
                         f"{a['verify'].get('max_abs', float('nan')):.2e} | "
                         f"{a['verify'].get('min_cosine', float('nan')):.6f} |")
    for a in manifest["artifacts"]:
        n, h, w, c = a["input"]["shape"] if a["input"]["layout"] == "NHWC" else (
            a["input"]["shape"][0], a["input"]["shape"][2], a["input"]["shape"][3], a["input"]["shape"][1])
        files = [f["file"] for f in a["files"]]
        if "output" not in a:  # several outputs: the names table says what each is called
            lines += ["", f"## {a['target']} ({a['precision']}): `{files[0]}`", "",
                      "outputs (name in this file -> the graph's name): "
                      + ", ".join(f"`{o['name']}` -> `{o['original_name']}`" for o in a["outputs"])]
            continue
        snippet = SNIPPETS[a["target"]].format(file=files[0], sibling=files[1] if len(files) > 1 else "",
                                               h=h, w=w, d=a["output"]["embedding_size"],
                                               input=a["input"]["name"], output=a["output"]["name"])
        lines += ["", f"## {a['target']} ({a['precision']}): `{files[0]}`", "", snippet]
        if a["target"] in OPENCV_VERSIONS:
            lines += ["", OPENCV_VERSIONS[a["target"]]]
    return "\n".join(lines) + "\n"
