"""The architecture layer: ModelSpec, presets, Hugging Face config.json import.

Public entry points:

* ``from_hf_config(path)``: a local Hugging Face ``config.json`` -> ModelSpec.
* ``list_presets()``, ``get_preset(name)``: the bundled well-known models.
* ``load_model(ref)``: a preset name, a config.json path, an architecture YAML path, or a dict.
"""

from optimizer.model.hf import SUPPORTED_MODEL_TYPES, from_hf_config, spec_from_hf_dict
from optimizer.model.registry import PresetInfo, get_preset, list_presets, load_model, preset_names
from optimizer.model.spec import MLASpec, MoESpec, ModelSpec

__all__ = ["ModelSpec", "MoESpec", "MLASpec", "from_hf_config", "spec_from_hf_dict",
           "SUPPORTED_MODEL_TYPES", "PresetInfo", "list_presets", "get_preset", "load_model",
           "preset_names"]
