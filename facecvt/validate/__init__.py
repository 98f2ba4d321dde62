"""Runners (one per backend), inputs and preprocessing, comparison, metrics and reports."""
