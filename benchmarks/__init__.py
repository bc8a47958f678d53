"""Benchmarks that compare sidecar memory with vector-store and window memories.

Run the full suite with ``python -m benchmarks.run --out benchmarks/results``.
"""
