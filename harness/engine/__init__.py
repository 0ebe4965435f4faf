"""Training and inference: the trainer, its data pipeline, checkpoints, devices and DDP."""
