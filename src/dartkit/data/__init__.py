"""Benchmark loaders (safe unpickling, JSONL), scenario-grouped splits and the built-in demo suite."""
