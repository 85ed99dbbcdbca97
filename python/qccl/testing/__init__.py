"""Pure-PyTorch references for testing qccl (not used by qccl itself)."""
