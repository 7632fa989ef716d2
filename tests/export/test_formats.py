"""gn_det.export.formats: each export format is one table entry with a writer, a runner and a
norm probe under the same name; a format name or a package a format needs that is missing ends
in one line."""
import sys

import pytest

from gn_det import export
from gn_det.export.norm_probes import PROBE_RUNNERS


def test_every_format_has_a_writer_a_runner_and_a_probe():
    assert set(export.WRITERS) == set(export.RUNNERS) == set(PROBE_RUNNERS) == \
        set(export.FORMATS) == set(export.FILE_NAMES) == set(export.RUNTIMES)
    assert len(set(export.FILE_NAMES.values())) == len(export.FORMATS)


def test_an_unknown_format_is_one_line_naming_the_valid_ones():
    with pytest.raises(export.ExportError, match=r"^--format onnxx: valid are torchscript, onnx$"):
        export.check_formats(["torchscript", "onnxx"])
    with pytest.raises(export.ExportError, match="--format onnxx: valid are"):
        export.load_runner("onnxx", "model.onnxx")


def test_a_missing_optional_package_is_one_line_naming_the_extra(monkeypatch):
    """onnx and onnxruntime are optional (the [export] extra): without them an ONNX export ends
    in one line saying what to install, before any work."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(export.ExportError, match=r"--format onnx needs the onnxruntime package: "
                                                 r"pip install -e '\.\[export\]'"):
        export.load_runner("onnx", "model.onnx")
