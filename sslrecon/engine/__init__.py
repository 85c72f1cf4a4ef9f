"""Training loop, tiled inference, validation metrics and checkpoints."""
