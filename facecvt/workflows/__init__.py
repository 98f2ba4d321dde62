"""Workflows that combine the layers: inspect, export bundle (write, then check), bench, demo."""
