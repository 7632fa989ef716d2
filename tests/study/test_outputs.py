"""gn_det.study.outputs: results.md's header says what MODEL.PRECISION ran as on the machine, and
the committed results.json files (some written before that field existed) still rebuild."""
import glob
import os

import pytest

from gn_det.study.outputs import markdown_header, plot_title, rebuild

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INFO = {"grid": {"command": "python tools/compare_norms.py", "train_dataset": ["a_train"],
                 "test_dataset": ["a_val"], "design": "controlled", "effective_batch": 4,
                 "seeds": [0, 1, 2], "precision": "auto", "jobs": 2, "threads": 1,
                 "schedule": {"images": 480, "lr_per_image": 0.0005, "optimizer": "AdamW",
                              "warmup_images": 100, "step_fractions": [0.75]}},
        "machine": {"cpu": "Some CPU", "usable_cores": 2, "torch_threads": 2, "torch": "2.x"}}


def test_header_names_the_precision_the_cells_ran_in():
    used = "fp32 on cpu (no autocast, NCHW): MODEL.PRECISION=auto: no bf16 matrix units"
    info = {"grid": dict(INFO["grid"], precision_used=used), "machine": INFO["machine"]}
    assert f"MODEL.PRECISION auto, run as {used}.\n" in markdown_header(info)
    # a results.json from before the field existed: the configured value only
    assert "MODEL.PRECISION auto.\n" in markdown_header(INFO)


@pytest.mark.parametrize("results", sorted(glob.glob(os.path.join(REPO, "docs", "study", "*", "*",
                                                                    "results.json"))))
def test_committed_results_rebuild(results, tmp_path):
    rebuild(results, str(tmp_path))
    design = os.path.basename(os.path.dirname(results))
    text = (tmp_path / design / "results.md").read_text()
    assert text.startswith("Command: `") and "| bn_all " in text


def test_plot_title_counts_the_seeds_that_finished():
    rows = [{"seed": 0, "status": "done"}, {"seed": 1, "status": "diverged"},
            {"seed": 2, "status": "failed"}]
    assert plot_title(rows, INFO["grid"], "AP") == \
        "AP vs images per GPU: a_train, controlled design, 2 of 3 seeds"
    rows[2]["status"] = "done"
    assert plot_title(rows, INFO["grid"], "AP50").endswith("design, 3 seed(s)")
