"""Builders of raw FaceNet-style *training* graphs, for the demo and the tests."""
