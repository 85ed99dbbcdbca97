"""Backend comparison benchmark: `python -m qccl.bench --help`."""
