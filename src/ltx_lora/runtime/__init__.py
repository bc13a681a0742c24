"""What a command runs on: device and dtype, the memory plan, block placement, and the loaded models.

Below train/ and sample/ (both call it), above ltx/ (whose loaders it calls). Nothing here imports a command or
a training component.
"""
