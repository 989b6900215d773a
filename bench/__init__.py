"""Benchmarks of workpools (run as scripts: `.venv/bin/python bench/rpc.py`)."""
