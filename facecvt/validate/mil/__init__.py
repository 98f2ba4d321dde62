"""A NumPy reference executor of Core ML ML programs, for checking Core ML exports where Core ML
itself cannot run (Linux). `MilExecutor(path).run({"input": x})` returns the program's outputs."""

from facecvt.validate.mil.executor import MilExecutor, unsupported_op_error
from facecvt.validate.mil.program import MilProgram, load_program

__all__ = ["MilExecutor", "MilProgram", "load_program", "unsupported_op_error"]
