"""What gn_det's training CLIs share (tools/train_net.py, tools/lazy_train_net.py), as
detectron2.engine.defaults does for its own: the argument parser, the launch from parsed
arguments, the logging setup, the event writers, the final metrics file."""
import json
import numbers
import os
import time
from typing import Mapping, Optional

from detectron2.engine import default_argument_parser
from detectron2.engine import default_setup as d2_default_setup
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger

from ..evaluation.report import AP_UNIT, NULL_MEANS
from ..utils.file_io import finite_or_null, write_json
from .launch import launch



def argument_parser(epilog=None):
    """detectron2's default_argument_parser (--config-file, --resume, --eval-only, --num-gpus,
    --num-machines, --machine-rank, --dist-url, trailing opts) plus --debug."""
    parser = default_argument_parser(epilog)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def launch_cli(main, argv=None):
    """Parse the command line and run `main(args)` in the processes it asks for."""
    args = argument_parser().parse_args(argv)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


class StrictJSONWriter(JSONWriter):
    """detectron2's JSONWriter (OUTPUT_DIR/metrics.json: one JSON object of scalars per line),
    with a NaN or infinite scalar (e.g. the evaluator's AP of an object size with no ground
    truth, which detectron2 reports as NaN) written as null: every line is strict JSON."""

    def __init__(self, json_file: str, window_size: int = 20):
        super().__init__(json_file, window_size)
        self._file_handle = _StrictJSONLines(self._file_handle)


class _StrictJSONLines:
    """A text file whose write() re-encodes each JSON line with non-finite numbers as null."""

    def __init__(self, file):
        self._file = file

    def write(self, text: str) -> int:
        lines = [json.dumps(finite_or_null(json.loads(line))[0], sort_keys=True, allow_nan=False)
                 if line.strip() else line for line in text.split("\n")]
        return self._file.write("\n".join(lines))

    def __getattr__(self, name):  # flush, fileno, close: the file's own
        return getattr(self._file, name)


def default_writers(output_dir: str, max_iter: Optional[int] = None) -> list:
    """detectron2's default_writers (console, metrics.json, TensorBoard), with metrics.json
    written by StrictJSONWriter."""
    PathManager.mkdirs(output_dir)
    return [CommonMetricPrinter(max_iter),
            StrictJSONWriter(os.path.join(output_dir, "metrics.json")),
            TensorboardXWriter(output_dir)]


def write_final_metrics(output_dir: str, config_file: str, iteration, started: float,
                        results: dict) -> None:
    """OUTPUT_DIR/metrics_final.json (main process only): the config, the last iteration (None
    for --eval-only), the wall seconds since `started` (time.perf_counter) and the results, as
    fractions 0-1 (see results_as_fractions), in strict JSON with null for undefined values."""
    if comm.is_main_process():
        final = {"config_file": config_file, "iteration": iteration,
                 "seconds": round(time.perf_counter() - started, 1), "ap_unit": AP_UNIT,
                 "results": results_as_fractions(results)}
        write_json(os.path.join(output_dir, "metrics_final.json"), final, null_means=NULL_MEANS,
                   indent=2, default=float)


def results_as_fractions(results: Mapping) -> dict:
    """detectron2 evaluator results ({task: {metric: value}}, or {dataset: {task: ...}} for
    several test sets) with every metric divided by 100: detectron2's evaluators and its console
    report AP/AR (and gn_det's P/R/F1) in percent, pycocotools and gn_det's metrics.json in
    fractions. Keys ending in "_score" are score thresholds, already 0-1, and stay as they are."""
    out = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            out[key] = results_as_fractions(value)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool) \
                and not str(key).endswith("_score"):
            out[key] = float(value) / 100.0
        else:
            out[key] = value
    return out


def default_setup(cfg, args):
    """detectron2's default_setup (its loggers, config.yaml, seed), plus the `gn_det` logger to
    the console and the output folder's log.txt: without it the evaluator's P/R table and
    gn_det's warnings (e.g. dropped boxes) would reach no handler. `cfg`: a YAML config
    (OUTPUT_DIR) or a LazyConfig (train.output_dir)."""
    d2_default_setup(cfg, args)
    output_dir = cfg.OUTPUT_DIR if hasattr(cfg, "OUTPUT_DIR") else cfg.train.output_dir
    setup_logger(output_dir, distributed_rank=comm.get_rank(), name="gn_det",
                 abbrev_name="gn_det")
