"""Evaluation: metrics, scorers per model kind, GLUE."""
