"""Several processes (GPUs) training one LoRA: the torchrun environment, model wrapping, and the launcher.

- `env`: who am I (rank / world from torchrun's variables), the process group, barriers and small collectives.
- `parallel`: DDP or FSDP2 around the transformer; full (world-size independent) LoRA and optimizer state.
- `launch`: `ltx-lora train --gpus N` re-runs the same command under torch.distributed.run.

With one process every helper is a no-op, so the single-GPU path is the same code.
"""
