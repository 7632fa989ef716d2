"""Interleaved training-step timing of real-config variants in one process (2 threads): each round
runs one step (with its hooks: the EMA update) of every variant in turn, so a load change hits all
of them alike. Prints each variant's median seconds per step and its median paired ratio to the
first variant.

    python docs/real_data/recipe_step_timing.py ROUNDS WARMUP NAME=CONFIG|DATASET[|OPTS] ...

DATASET: bccd or raccoon (their tune_train split, converted as in docs/REAL_DATA.md section 1);
OPTS: space-separated KEY VALUE config overrides."""
import statistics
import sys
import time

import torch

import gn_det  # noqa: F401
from detectron2.utils.events import EventStorage
from gn_det.config import load_cfg
from gn_det.data import register_datasets_from_cfg
from gn_det.engine import Trainer

S = "../shared/data"
C = "output/real/coco"
DATA = {
    "bccd": (f"[['t_train','{C}/bccd_tune_train.json','{S}/bccd/JPEGImages'],"
             f"['t_val','{C}/bccd_tune_val.json','{S}/bccd/JPEGImages']]", "3"),
    "raccoon": (f"[['r_train','{C}/raccoon_tune_train.json','{S}/raccoon/images'],"
                f"['r_val','{C}/raccoon_tune_val.json','{S}/raccoon/images']]", "1"),
}

if len(sys.argv) < 4:
    sys.exit(__doc__)
rounds, warmup = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(2)
trainers = {}
for spec in sys.argv[3:]:
    name, rest = spec.split("=", 1)
    parts = rest.split("|")
    config, dataset, opts = parts[0], parts[1], parts[2].split() if len(parts) > 2 else []
    coco, ncls = DATA[dataset]
    prefix = "t" if dataset == "bccd" else "r"
    cfg = load_cfg(config, ["DATASETS.COCO_FORMAT", coco, "DATASETS.TRAIN", f"('{prefix}_train',)",
                            "DATASETS.TEST", "()", "MODEL.RETINANET.NUM_CLASSES", ncls,
                            "SOLVER.MAX_ITER", "100000", "SOLVER.CHECKPOINT_PERIOD", "1000000",
                            "OUTPUT_DIR", f"/tmp/recipe_step_timing/{name}", *opts])
    register_datasets_from_cfg(cfg)
    t = Trainer(cfg)
    t.resume_or_load(resume=False)
    trainers[name] = t
times = {n: [] for n in trainers}
storages = {n: EventStorage(0) for n in trainers}
for n, t in trainers.items():
    t.storage = storages[n]
    with storages[n]:
        t.before_train()
for r in range(warmup + rounds):
    for n, t in trainers.items():
        with storages[n]:
            t.iter = r
            storages[n].iter = r
            start = time.perf_counter()
            t.before_step()
            t.run_step()
            t.after_step()
            if r >= warmup:
                times[n].append(time.perf_counter() - start)
with open("/proc/loadavg") as f:
    load = f.read().split()[:3]
base = next(iter(times))
for n, ts in times.items():
    ratios = [a / b for a, b in zip(ts, times[base])]
    print(f"{n:24s} median {statistics.median(ts):.3f} s/step  (min {min(ts):.3f}, "
          f"{len(ts)} steps)  ratio to {base}: {statistics.median(ratios):.3f}")
print("load average at the end:", " ".join(load))
