"""Training machinery: the CPU-capable launcher (and, with the training issue, the trainer)."""
from .launch import launch

__all__ = ["launch"]
