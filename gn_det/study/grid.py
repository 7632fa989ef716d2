"""The norm x per-GPU-batch grid: norm presets, the per-image schedule every cell shares, and each
cell's full config (batch-scaled LR, iterations, warm-up and LR steps over the same images).

Every cell trains from the same seed (so the same initial weights per preset, and the same image
order) on the same number of images: MAX_ITER = images / batch, BASE_LR = lr_per_image * batch
(the linear scaling rule), WARMUP_ITERS and STEPS cover the same images at every batch. The
schedule is read from the base config (its BASE_LR / IMS_PER_BATCH, WARMUP_ITERS, STEPS, MAX_ITER,
CHECKPOINT_PERIOD, SEED) unless set by flags.
"""
import dataclasses
import math
import os
from typing import Dict, List, Sequence, Tuple

from detectron2.config import CfgNode

from ..config import load_cfg
from ..data import check_num_classes, register_datasets_from_cfg
from ..model_zoo import NORM_PRESETS, preset_norm_opts

@dataclasses.dataclass(frozen=True)
class Preset:
    """A norm setting: `opts` over the grid's base config, or (extra presets) a config file of
    its own that replaces the base config."""

    name: str
    description: str
    opts: Tuple[str, ...] = ()
    config_file: str = ""


# The study's presets: gn_det's norm presets (gn_det.model_zoo, defined by configs/RetinaNet/),
# applied to the grid's base config as per-component TYPE / WS opts.
PRESETS: Dict[str, Preset] = {
    name: Preset(name, NORM_PRESETS[name].description, preset_norm_opts(name))
    for name in ("frozenbn", "bn_all", "gn_fpn_head", "gn_all", "gnws_all")}
DEFAULT_BATCHES = (1, 2, 4, 8)

# Config keys each cell sets from the schedule; user opts may not set them.
SCHEDULE_KEYS = ("SOLVER.IMS_PER_BATCH", "SOLVER.REFERENCE_WORLD_SIZE", "SOLVER.ACCUMULATE_STEPS",
                 "SOLVER.BASE_LR", "SOLVER.MAX_ITER", "SOLVER.WARMUP_ITERS", "SOLVER.STEPS",
                 "SOLVER.CHECKPOINT_PERIOD", "SOLVER.OPTIMIZER", "TEST.EVAL_PERIOD", "SEED",
                 "OUTPUT_DIR")


def extra_preset(config_file: str) -> Preset:
    """An extra preset from `--config FILE`, named after the file."""
    name = os.path.splitext(os.path.basename(config_file))[0]
    return Preset(name, f"config {config_file}", config_file=config_file)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What every cell shares, counted in images so it means the same at every batch."""

    images: int                          # training images per cell
    lr_per_image: float                  # BASE_LR = lr_per_image * batch
    warmup_images: int                   # linear warm-up length
    step_fractions: Tuple[float, ...]    # LR drops (x SOLVER.GAMMA) at these fractions
    checkpoint_fraction: float           # a checkpoint every this fraction of the schedule
    seed: int                            # SEED: the same initial weights in every cell
    optimizer: str = "SGD"               # SOLVER.OPTIMIZER: lr_per_image is in its units

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

    def check(self, batches: Sequence[int]) -> None:
        """One-line errors naming the flag at fault."""
        if self.images <= 0:
            raise ValueError(f"--max-images must be positive, got {self.images}")
        bad = [b for b in batches if self.images % b]
        if bad:
            lcm = math.lcm(*batches)
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
            solver = self.solver(batch)
            steps, max_iter = list(solver["SOLVER.STEPS"]), solver["SOLVER.MAX_ITER"]
            if steps and (steps[0] < 1 or steps[-1] >= max_iter or len(set(steps)) < len(steps)):
                raise ValueError(f"--steps {','.join(f'{f:g}' for f in self.step_fractions)}: at "
                                 f"batch {batch} ({max_iter} iterations) the LR steps round to "
                                 f"iterations {steps}, which are not distinct and inside "
                                 f"(0, {max_iter}); raise --max-images or drop steps")

    def solver(self, batch: int) -> Dict[str, object]:
        """The config values of a cell at `batch` images per GPU (one process, no accumulation)."""
        max_iter = self.images // batch
        return {
            "SOLVER.IMS_PER_BATCH": batch,
            "SOLVER.REFERENCE_WORLD_SIZE": 0,
            "SOLVER.ACCUMULATE_STEPS": 1,
            "SOLVER.BASE_LR": float(self.lr_per_image * batch),
            "SOLVER.MAX_ITER": max_iter,
            "SOLVER.WARMUP_ITERS": round(self.warmup_images / batch),
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

    @property
    def key(self) -> str:
        return f"{self.preset.name}/bs{self.batch}"

    def folder(self, out: str) -> str:
        return os.path.join(out, self.preset.name, f"bs{self.batch}")


@dataclasses.dataclass
class Grid:
    """Presets x batches over one base config, one schedule and the opts every cell gets."""

    base_config: str
    presets: List[Preset]
    batches: List[int]
    schedule: Schedule
    opts: List[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.schedule.check(self.batches)
        names = [p.name for p in self.presets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"preset name {dup[0]!r} is used twice (--config files are named "
                             f"after their file name); rename one of the files")
        for key in self.opts[::2]:
            if key in SCHEDULE_KEYS:
                raise ValueError(f"opts: {key} is set per cell by the grid; use --max-images, "
                                 f"--lr-per-image, --warmup-images, --steps, --seed or --out")

    def cells(self) -> List[Cell]:
        return [Cell(p, b) for p in self.presets for b in self.batches]

    def cell_cfg(self, cell: Cell, out: str) -> CfgNode:
        """The complete, validated config of one cell (datasets registered). Unless set, the
        dataset cache (image verdicts, cleaned annotations) is one for the grid, OUT/dataset_cache:
        cells reuse it, and a cell folder holds only what its run wrote."""
        solver = self.schedule.solver(cell.batch)
        solver["OUTPUT_DIR"] = os.path.abspath(cell.folder(out))
        opts = list(cell.preset.opts) + list(self.opts)
        for key, value in solver.items():
            opts += [key, value]
        cfg = load_cfg(cell.preset.config_file or self.base_config, opts)
        if not cfg.DATASETS.CACHE_DIR:
            cfg.DATASETS.CACHE_DIR = os.path.abspath(os.path.join(out, "dataset_cache"))
        register_datasets_from_cfg(cfg)
        check_num_classes(cfg)
        return cfg
