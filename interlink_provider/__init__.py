"""interlink-provider: burst Kubernetes pods, unchanged, to remote HPC sites."""

__version__ = "0.1.0"
