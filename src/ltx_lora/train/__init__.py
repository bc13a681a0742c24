"""LoRA training: objective, LoRA injection, optimizers, checkpoints and the loop."""
