"""Configs, YAML and LazyConfig: gn_det's keys (defaults.add_gn_det_config), the per-component
norm spec (specs), reading a YAML config (yaml_config.load_cfg) or a LazyConfig (lazy), and the
one front for either kind (front: is_lazy, load_config, component_specs, ...)."""
from .defaults import add_gn_det_config
from .front import (build_config_model, component_specs, describe_specs, is_lazy, is_lazy_file,
                    load_config, load_saved_config, output_dir, register_config_datasets, weights,
                    weights_key)
from .lazy import (LAZY_COMPONENTS, apply_overrides, call_argument, check_norms,
                   lazy_component_specs, load_lazy_cfg)
from .specs import COMPONENTS, all_component_specs, component_spec, describe_norms
from .yaml_config import load_cfg, merge_config_file
