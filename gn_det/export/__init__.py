"""Export a trained gn_det detector to TorchScript and ONNX with WS folded (and, on CPUs with
bf16 matrix units, to bf16 TorchScript), with the config's per-class score thresholds in the
graph, and check the exported model against eager PyTorch before it takes its file name.

The export is detectron2's (tools/deploy/export_model.py, `--export-method tracing`): the model
in eval mode is wrapped in `detectron2.export.TracingAdapter`, traced once with `torch.jit.trace`
(TorchScript) and that trace exported with `torch.onnx.export(dynamo=False)` (ONNX). What runs
inside the exported graph and what stays outside is detectron2's split (pipeline.SPLIT). Every
exported file is first written under a temp name, loaded back (torch.jit.load / ONNX Runtime's
CPU provider), run on the sample images and compared detection by detection with the eager model;
only a file whose check passes is renamed to model.ts / model.onnx.

Modules: formats (the formats as data, the graph's input / output names), settings (what the
export reads from a YAML or LazyConfig config), model (the trained model, loaded strictly),
samples (sample images, the steps outside the graph), tracing, writers, runtimes, detections
(matching exported against eager detections), norm_probes (which norm an exporter gets wrong) and
pipeline (export_model and its report).
"""
from .detections import (BF16_TOLERANCE, DEFAULT_TOLERANCE, SAME_PRECISION_TOLERANCE,
                         TOLERANCES, Comparison, Detections, Tolerance, match_detections)
from .formats import (DEFAULT_FORMATS, EXPORT_FORMATS, FILE_NAMES, FORMATS, INPUT_NAME,
                      ONNX_OPSET, OUTPUT_NAMES, RUNTIMES, ExportError, ExportFormat,
                      check_available, check_formats)
from .model import (attach_config_thresholds, check_supported, check_trained_config,
                    load_trained_model)
from .norm_probes import norm_layers, probe_norm, write_onnx_plain, wrong_norms
from .pipeline import SPLIT, FormatResult, check_exported, export_model
from .runtimes import RUNNERS, load_runner
from .samples import (Sample, dataset_samples, eager_detections, postprocess, prepare_image,
                      read_sample_images)
from .settings import ExportSettings, load_export_config, settings
from .tracing import fold_for_export, layers_using, trace
from .writers import (WRITERS, Traced, trace_bf16, write_onnx, write_torchscript,
                      write_torchscript_bf16)
