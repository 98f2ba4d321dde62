"""facecvt: convert training-mode TensorFlow FaceNet models to deployable runtimes and prove parity."""

__version__ = "0.1.0"
