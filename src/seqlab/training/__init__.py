"""Training: the loss, the learning-rate schedule, checkpoints and the one training loop."""
