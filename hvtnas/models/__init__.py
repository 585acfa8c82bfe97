"""Models: the MetaFormer skeleton, its parts, the mixer registry, the builder and the zoo.

Attributes are imported lazily: ``hvtnas.config`` reads the mixer registry while the builder
reads ``hvtnas.config``, so an eager import here would be circular.
"""

from __future__ import annotations

from hvtnas._lazy import lazy_getattr

_EXPORTS = {
    "build_model": "hvtnas.models.build",
    "resolve_config": "hvtnas.models.build",
    "FeaturePyramid": "hvtnas.models.metaformer",
    "MetaFormer": "hvtnas.models.metaformer",
    "load_weights": "hvtnas.models.weights",
    "save_weights": "hvtnas.models.weights",
    "MIXERS": "hvtnas.models.mixers",
    "MixerParams": "hvtnas.models.mixers",
    "TokenMixer": "hvtnas.models.mixers",
    "scale_architecture": "hvtnas.models.scaling",
    "scale_to_flops": "hvtnas.models.scaling",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
