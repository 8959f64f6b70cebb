"""The sans-I/O core: pure, synchronous and deterministic.

Nothing in this package performs I/O, reads a clock or draws randomness; time and
keys are passed in by the adapters. Only the standard library's pure modules and the
hash and signature libraries may be imported here (a test enforces it).
"""
