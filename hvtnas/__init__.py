"""hvtnas: neural architecture search over the MetaFormer design space of hierarchical ViTs."""

from hvtnas.config import ArchConfig
from hvtnas.errors import ConfigError, HvtnasError
from hvtnas.models import MIXERS, MetaFormer, build_model, resolve_config
from hvtnas.summary import ModelSummary, summarize

__version__ = "0.1.0"

__all__ = [
    "MIXERS",
    "ArchConfig",
    "ConfigError",
    "HvtnasError",
    "MetaFormer",
    "ModelSummary",
    "__version__",
    "build_model",
    "resolve_config",
    "summarize",
]
