"""Benchmark and hardware-check support: random-init models built from configs, the GPU
check's plan and comparisons, wheel requirements, profiler summaries (no downloads)."""
