"""gn_det.export.formats: each export format is one table entry with a writer and a runner
(and, for the float32 forms, a norm probe) under the same name; a format name, a package a format
needs, or bf16 units a bf16 form needs that are missing end in one line."""
import sys

import pytest

from gn_det import export
from gn_det.export.norm_probes import PROBE_RUNNERS


def test_every_format_has_a_writer_a_runner_and_a_probe():
    assert set(export.WRITERS) == set(export.RUNNERS) == set(export.FORMATS) == \
        set(export.FILE_NAMES) == set(export.RUNTIMES)
    assert len(set(export.FILE_NAMES.values())) == len(export.FORMATS)
    # every float32 form is probed per norm; a bf16 form differs from float32 by its precision
    fp32 = {f for f, spec in export.EXPORT_FORMATS.items() if spec.precision == "fp32"}
    assert set(PROBE_RUNNERS) == fp32 and set(export.DEFAULT_FORMATS) == fp32
    assert {spec.precision for spec in export.EXPORT_FORMATS.values()} <= set(export.TOLERANCES)


def test_a_bf16_form_is_refused_in_one_line_where_the_cpu_has_no_bf16_units(monkeypatch):
    monkeypatch.setattr("gn_det.export.formats.cpu_bf16_flags", lambda: ())
    with pytest.raises(export.ExportError, match=r"^--format torchscript_bf16: this CPU has "
                                                 r"neither amx_bf16 nor avx512_bf16 .*; use "
                                                 r"--format torchscript or onnx$"):
        export.check_available("torchscript_bf16")
    export.check_available("torchscript")  # float32 forms run anywhere


def test_an_unknown_format_is_one_line_naming_the_valid_ones():
    with pytest.raises(export.ExportError,
                       match=r"^--format onnxx: valid are torchscript, onnx, torchscript_bf16$"):
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
