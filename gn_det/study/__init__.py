"""The small-batch study behind tools/compare_norms.py: a grid of norm presets x images per GPU,
each cell trained in its own process from the same seed on the same images, then tabulated and
plotted (AP vs batch).

grid (presets, schedule, cell configs) -> runner (one process per cell: train_cell) ->
tables (results.csv / .json / .md) and ap_plot (ap_vs_batch.png).

pretrain.py (gn-det-pretrain) is the BiT fine-tuning study: a stand-in GN+WS
pretraining with timm's ResNetV2, then RetinaNet fine-tuned from it vs from scratch (train_cell).
"""
from .grid import DEFAULT_BATCHES, PRESETS, Cell, Grid, Preset, Schedule, extra_preset

__all__ = ["DEFAULT_BATCHES", "PRESETS", "Cell", "Grid", "Preset", "Schedule", "extra_preset"]
