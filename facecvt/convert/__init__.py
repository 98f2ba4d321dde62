"""One module per target; each exposes `TARGET`, `BACKEND`, `SUFFIX` and `write(frozen, tmp_path, **options)`.

`facecvt.convert.base.export` wraps every target the same way: atomic write, load check, report.
"""

TARGETS = {
    "opencv": "facecvt.convert.opencv",
    "onnx": "facecvt.convert.onnx",
    "tflite": "facecvt.convert.tflite",
    "coreml": "facecvt.convert.coreml",
}
