"""Benchmarks behind tools/benchmark.py: side-by-side timing helpers (timing), GN and WS layer
benchmarks (layers) and the end-to-end RetinaNet benchmark (e2e). Results: docs/PERFORMANCE.md."""
