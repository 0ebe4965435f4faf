"""The run store: one folder per (dataset, backbone, run name, seed)."""
