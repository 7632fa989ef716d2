"""Training machinery: the CPU-capable launcher, the trainer and its config setup."""
from .launch import launch
from .trainer import Trainer, default_setup, setup_cfg

__all__ = ["launch", "Trainer", "default_setup", "setup_cfg"]
