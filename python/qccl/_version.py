# The one version string: the package metadata (pyproject.toml) and qccl.__version__ read it.
__version__ = "0.3.0"
