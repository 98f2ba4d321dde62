"""What every layer stands on: loading models, the frozen graph, errors, atomic writes, runtime imports."""
