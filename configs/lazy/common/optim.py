# Optimizers: detectron2's SGD (configs/common/optim.py; norm layers, GN included, get no weight
# decay) and AdamW with the same parameter groups (for training from scratch; ~10-100x smaller lr).
# Both take torch's fused one-kernel step (CPU and CUDA parameters; set fused=False elsewhere), as
# the YAML path's SOLVER.FUSED does.
import torch

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver.build import get_default_optimizer_params

SGD = get_config("common/optim.py").SGD
SGD.fused = True
AdamW = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0), lr=2e-3, weight_decay=0.05,
    fused=True)
