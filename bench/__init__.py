"""Benchmarks of qudag-node: ``python -m bench`` runs the suite (:mod:`bench.suite`)."""
