"""Training machinery: the CPU-capable launcher, the trainer, and what the training CLIs share."""
from .defaults import argument_parser, default_setup, launch_cli, write_final_metrics
from .launch import launch
from .trainer import Trainer

__all__ = ["argument_parser", "default_setup", "launch", "launch_cli", "Trainer",
           "write_final_metrics"]
