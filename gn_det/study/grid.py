"""The norm x per-GPU-batch grid: norm presets, the two designs, the per-image schedule every cell
shares, the seeds, and each cell's full config.

Two designs, named for the question each answers (`DESIGNS`):

- **controlled** — *what does the norm's batch alone do?* The optimizer's batch, LR, iterations
  and schedule are the same in every cell: an effective batch of E images per optimizer step, as
  b images per forward (the batch BN normalizes over) times E / b accumulation steps
  (SOLVER.IMS_PER_BATCH = b, SOLVER.ACCUMULATE_STEPS = E / b). Every cell of a seed sees the same
  images in the same order, E per step (aspect-ratio grouping is off, so the loader's order is the
  sampler's), and RetinaNet's loss is normalized per optimizer step
  (gn_det.study.step_normalizer), so the cells of a batch-independent norm (GN, GN+WS, FRN,
  EvoNorm) are the same training up to numerics, and only BN / BRN see a different batch.
- **budget** — *what does a user with one small GPU get?* Each cell trains at b images per step
  (no accumulation), BASE_LR = lr_per_image x b (the linear scaling rule), for the image budget
  (MAX_ITER = images / b), but never fewer than `min_steps` optimizer steps, so a large batch is
  not starved of updates (it then sees more images). The image budget and the floor are counts of
  images and steps, so the rule reads the same on any dataset (`--epochs` sets the budget from the
  training set's size).

In both, WARMUP_ITERS and STEPS cover the same images (warm-up) and fractions of the schedule
(LR steps) at every batch, and every cell of a seed starts from that seed's initial weights
(per preset) and data order. The schedule is read from the base config (its BASE_LR /
effective batch, WARMUP_ITERS, STEPS, MAX_ITER, CHECKPOINT_PERIOD, SEED) unless set by flags.
"""
import dataclasses
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.config import CfgNode

from ..config import load_cfg
from ..data import check_num_classes, register_datasets_from_cfg
from ..model_zoo import NORM_PRESETS, PRESET_COMPONENTS, preset_norm_opts
from .step_normalizer import STEP_NORMALIZED_ARCH


@dataclasses.dataclass(frozen=True)
class Preset:
    """A norm setting: `opts` over the grid's base config, or (extra presets) a config file of
    its own that replaces the base config."""

    name: str
    description: str
    opts: Tuple[str, ...] = ()
    config_file: str = ""


def _everywhere(norm: str) -> Tuple[str, ...]:
    """opts setting `norm` (no WS) in every RetinaNet component."""
    opts = []
    for component in PRESET_COMPONENTS:
        opts += [f"MODEL.NORMS.{component}.TYPE", norm, f"MODEL.NORMS.{component}.WS", "False"]
    return tuple(opts)


# The study's presets: gn_det's norm presets (gn_det.model_zoo, defined by configs/RetinaNet/),
# applied to the grid's base config as per-component TYPE / WS opts, and the other small-batch
# norms in every component.
PRESETS: Dict[str, Preset] = {
    name: Preset(name, NORM_PRESETS[name].description, preset_norm_opts(name))
    for name in ("frozenbn", "bn_all", "gn_fpn_head", "gn_all", "gnws_all")}
PRESETS.update({
    "brn_all": Preset("brn_all", "Batch Renormalization (BRN: r_max 3, d_max 5 after a warm-up, "
                      "running statistics per level in the head) in backbone, FPN and head",
                      _everywhere("BRN")),
    "frn_all": Preset("frn_all", "Filter Response Normalization with TLU (timm's) in backbone, "
                      "FPN and head", _everywhere("FRN")),
    "evonorm_all": Preset("evonorm_all", "EvoNorm-S0 (timm's, grouped like GN) in backbone, FPN "
                          "and head", _everywhere("EvoNormS0")),
})
DEFAULT_PRESETS = ("frozenbn", "bn_all", "gn_fpn_head", "gn_all", "gnws_all")
DEFAULT_BATCHES = (1, 2, 4, 8)
DESIGNS = ("budget", "controlled")

# Config keys each cell sets from the schedule; user opts may not set them.
SCHEDULE_KEYS = ("SOLVER.IMS_PER_BATCH", "SOLVER.REFERENCE_WORLD_SIZE", "SOLVER.ACCUMULATE_STEPS",
                 "SOLVER.BASE_LR", "SOLVER.MAX_ITER", "SOLVER.WARMUP_ITERS", "SOLVER.STEPS",
                 "SOLVER.CHECKPOINT_PERIOD", "SOLVER.OPTIMIZER", "TEST.EVAL_PERIOD", "SEED",
                 "OUTPUT_DIR")
# ... and those the controlled design sets besides.
CONTROLLED_KEYS = ("MODEL.META_ARCHITECTURE", "DATALOADER.ASPECT_RATIO_GROUPING")


def extra_preset(config_file: str) -> Preset:
    """An extra preset from `--config FILE`, named after the file."""
    name = os.path.splitext(os.path.basename(config_file))[0]
    return Preset(name, f"config {config_file}", config_file=config_file)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What every cell shares, counted in images (and optimizer steps) so that it means the same
    at every batch. `seed` is the first seed; a grid of n seeds runs seed .. seed + n - 1."""

    images: int                          # training images per cell (before the step floor)
    lr_per_image: float                  # BASE_LR = lr_per_image * the optimizer's batch
    warmup_images: int                   # linear warm-up length
    step_fractions: Tuple[float, ...]    # LR drops (x SOLVER.GAMMA) at these fractions
    checkpoint_fraction: float           # a checkpoint every this fraction of the schedule
    seed: int                            # SEED of the first seed's cells
    optimizer: str = "SGD"               # SOLVER.OPTIMIZER: lr_per_image is in its units
    min_steps: int = 0                   # at least this many optimizer steps per cell

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> "Schedule":
        """The schedule of a config, expressed per image (its effective batch is
        IMS_PER_BATCH * ACCUMULATE_STEPS images per optimizer step)."""
        s = cfg.SOLVER
        if s.MAX_ITER <= 0 or s.IMS_PER_BATCH <= 0:
            raise ValueError(f"the base config's SOLVER.MAX_ITER ({s.MAX_ITER}) and "
                             f"SOLVER.IMS_PER_BATCH ({s.IMS_PER_BATCH}) must be positive: the "
                             f"grid's schedule is read from them")
        batch = s.IMS_PER_BATCH * s.ACCUMULATE_STEPS
        return cls(images=s.MAX_ITER * batch, lr_per_image=s.BASE_LR / batch,
                   warmup_images=s.WARMUP_ITERS * batch,
                   step_fractions=tuple(x / s.MAX_ITER for x in s.STEPS),
                   checkpoint_fraction=min(1.0, s.CHECKPOINT_PERIOD / s.MAX_ITER),
                   seed=cfg.SEED if cfg.SEED >= 0 else 0, optimizer=cfg.SOLVER.OPTIMIZER)

    def check(self, batches: Sequence[int], effective_batch: int = 0) -> None:
        """One-line errors naming the flag at fault; `effective_batch` > 0: the controlled
        design's optimizer batch, else each batch is its own (the budget design)."""
        if self.images <= 0:
            raise ValueError(f"--max-images must be positive, got {self.images}")
        if self.min_steps < 0:
            raise ValueError(f"--min-steps must be >= 0, got {self.min_steps}")
        optimizer_batches = [effective_batch] if effective_batch else list(batches)
        bad = [b for b in optimizer_batches if self.images % b]
        if bad:
            lcm = math.lcm(*optimizer_batches)
            raise ValueError(f"--max-images {self.images} is not a multiple of batch {bad[0]}, so "
                             f"cells would not see the same images; use a multiple of {lcm} "
                             f"(e.g. {max(lcm, self.images // lcm * lcm)})")
        if not self.lr_per_image > 0:
            raise ValueError(f"--lr-per-image must be positive, got {self.lr_per_image:g}")
        if not 0 <= self.warmup_images < self.images:
            raise ValueError(f"--warmup-images {self.warmup_images} must be in [0, "
                             f"--max-images {self.images})")
        if any(not 0 < f < 1 for f in self.step_fractions) or \
                list(self.step_fractions) != sorted(self.step_fractions):
            raise ValueError(f"--steps {','.join(f'{f:g}' for f in self.step_fractions)}: LR "
                             f"steps are increasing fractions of the schedule, each in (0, 1)")
        for batch in batches:
            solver = self.solver(batch, effective_batch or batch)
            steps, max_iter = list(solver["SOLVER.STEPS"]), solver["SOLVER.MAX_ITER"]
            if steps and (steps[0] < 1 or steps[-1] >= max_iter or len(set(steps)) < len(steps)):
                raise ValueError(f"--steps {','.join(f'{f:g}' for f in self.step_fractions)}: at "
                                 f"batch {batch} ({max_iter} iterations) the LR steps round to "
                                 f"iterations {steps}, which are not distinct and inside "
                                 f"(0, {max_iter}); raise --max-images or drop steps")

    def solver(self, batch: int, effective_batch: Optional[int] = None) -> Dict[str, object]:
        """The config values of a cell at `batch` images per forward and `effective_batch`
        images per optimizer step (default: `batch`, no accumulation); SEED is the first
        seed's (Grid.cell_cfg sets each cell's)."""
        eff = effective_batch or batch
        max_iter = max(self.images // eff, self.min_steps)
        return {
            "SOLVER.IMS_PER_BATCH": batch,
            "SOLVER.REFERENCE_WORLD_SIZE": 0,
            "SOLVER.ACCUMULATE_STEPS": eff // batch,
            "SOLVER.BASE_LR": float(self.lr_per_image * eff),
            "SOLVER.MAX_ITER": max_iter,
            "SOLVER.WARMUP_ITERS": round(self.warmup_images / eff),
            "SOLVER.STEPS": tuple(round(f * max_iter) for f in self.step_fractions),
            "SOLVER.CHECKPOINT_PERIOD": max(1, round(self.checkpoint_fraction * max_iter)),
            "SOLVER.OPTIMIZER": self.optimizer,
            "TEST.EVAL_PERIOD": 0,
            "SEED": self.seed,
        }


@dataclasses.dataclass(frozen=True)
class Cell:
    preset: Preset
    batch: int
    seed: int = 0
    design: str = "budget"

    @property
    def key(self) -> str:
        return f"{self.preset.name}/bs{self.batch}/seed{self.seed}"

    def folder(self, out: str) -> str:
        return os.path.join(out, self.design, self.preset.name, f"bs{self.batch}",
                            f"seed{self.seed}")


@dataclasses.dataclass
class Grid:
    """Presets x batches x seeds over one base config, one design, one schedule and the opts
    every cell gets. `effective_batch` (controlled design): the optimizer's batch, default the
    largest of `batches`; every batch must divide it. `preset_batches`: presets run at only some
    of the batches (e.g. a batch-independent norm in the controlled design, whose cells are one
    training at every batch)."""

    base_config: str
    presets: List[Preset]
    batches: List[int]
    schedule: Schedule
    opts: List[str] = dataclasses.field(default_factory=list)
    design: str = "budget"
    num_seeds: int = 1
    effective_batch: int = 0
    preset_batches: Dict[str, List[int]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.design not in DESIGNS:
            raise ValueError(f"--design {self.design!r}: valid are {', '.join(DESIGNS)}")
        if self.num_seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.num_seeds}")
        if self.design == "controlled":
            self.effective_batch = self.effective_batch or max(self.batches)
            bad = [b for b in self.batches if self.effective_batch % b]
            if bad:
                raise ValueError(f"--effective-batch {self.effective_batch}: the controlled "
                                 f"design accumulates effective / b micro-batches, so every "
                                 f"batch must divide it; {bad[0]} does not")
        elif self.effective_batch:
            raise ValueError("--effective-batch is the controlled design's (--design "
                             "controlled); the budget design steps at every batch size")
        self.schedule.check(self.batches, self.effective_batch)
        names = [p.name for p in self.presets]
        for name, batches in self.preset_batches.items():
            if name not in names or not batches or not set(batches) <= set(self.batches):
                raise ValueError(f"--preset-batches {name}={','.join(map(str, batches))}: the "
                                 f"preset must be one of the grid's ({', '.join(names)}) and its "
                                 f"batches some of --batches ({','.join(map(str, self.batches))})")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"preset name {dup[0]!r} is used twice (--config files are named "
                             f"after their file name); rename one of the files")
        grid_keys = SCHEDULE_KEYS + (CONTROLLED_KEYS if self.design == "controlled" else ())
        for key in self.opts[::2]:
            if key in grid_keys:
                raise ValueError(f"opts: {key} is set per cell by the grid ({self.design} "
                                 f"design); use --max-images, --lr-per-image, --warmup-images, "
                                 f"--steps, --min-steps, --seed, --seeds or --out")

    @property
    def seeds(self) -> List[int]:
        return [self.schedule.seed + k for k in range(self.num_seeds)]

    def cells(self) -> List[Cell]:
        """Seed-major: every preset and batch of the first seed, then of the next one, so that a
        grid stopped early has whole seeds."""
        return [Cell(p, b, s, self.design) for s in self.seeds for p in self.presets
                for b in self.batches_of(p.name)]

    def batches_of(self, preset: str) -> List[int]:
        only = self.preset_batches.get(preset)
        return [b for b in self.batches if only is None or b in only]

    def solver(self, batch: int) -> Dict[str, object]:
        return self.schedule.solver(batch, self.effective_batch or batch)

    def cell_cfg(self, cell: Cell, out: str) -> CfgNode:
        """The complete, validated config of one cell (datasets registered). Unless set, the
        dataset cache (image verdicts, cleaned annotations) is one for the grid, OUT/dataset_cache:
        cells reuse it, and a cell folder holds only what its run wrote."""
        solver = self.solver(cell.batch)
        solver["SEED"] = cell.seed
        solver["OUTPUT_DIR"] = os.path.abspath(cell.folder(out))
        opts = list(cell.preset.opts) + list(self.opts)
        for key, value in solver.items():
            opts += [key, value]
        cfg = load_cfg(cell.preset.config_file or self.base_config, opts)
        if self.design == "controlled":
            controlled_arch(cfg, cell.preset.config_file or self.base_config)
        if not cfg.DATASETS.CACHE_DIR:
            cfg.DATASETS.CACHE_DIR = os.path.abspath(os.path.join(out, "dataset_cache"))
        register_datasets_from_cfg(cfg)
        check_num_classes(cfg)
        return cfg


def controlled_arch(cfg: CfgNode, source: str) -> None:
    """The controlled design's model: GNRetinaNet with its loss normalized per optimizer step
    (gn_det.study.step_normalizer), and the loader's order left to the sampler."""
    if cfg.MODEL.META_ARCHITECTURE != "GNRetinaNet":
        raise ValueError(f"{source}: the controlled design normalizes GNRetinaNet's loss per "
                         f"optimizer step, and MODEL.META_ARCHITECTURE is "
                         f"{cfg.MODEL.META_ARCHITECTURE!r}; use a GNRetinaNet config, or "
                         f"--design budget")
    cfg.MODEL.META_ARCHITECTURE = STEP_NORMALIZED_ARCH
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
