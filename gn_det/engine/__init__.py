"""Training machinery: the CPU-capable launcher, the trainer and the CLIs' logging setup."""
from .launch import launch
from .trainer import Trainer, default_setup

__all__ = ["launch", "Trainer", "default_setup"]
