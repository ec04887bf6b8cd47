"""The architecture layer: ModelSpec, presets, Hugging Face config.json import."""

from optimizer.model.spec import MLASpec, MoESpec, ModelSpec

__all__ = ["ModelSpec", "MoESpec", "MLASpec"]
