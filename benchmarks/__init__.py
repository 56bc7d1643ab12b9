"""Benchmarks: each compares accelerate-core with the hand-written loop in the same run."""
