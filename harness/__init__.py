"""PVKD reproduction harness: data -> voxelize -> backbone -> taps -> distill -> train -> evaluate -> report."""

__version__ = "0.1.0"
