"""hvtnas: neural architecture search over the MetaFormer design space of hierarchical ViTs."""

from hvtnas.config import ArchConfig
from hvtnas.costs import Costs, CostSettings, measure_costs
from hvtnas.errors import ConfigError, HvtnasError
from hvtnas.models import MIXERS, MetaFormer, build_model, resolve_config
from hvtnas.summary import ModelSummary, summarize

__version__ = "0.1.0"

__all__ = [
    "MIXERS",
    "ArchConfig",
    "ConfigError",
    "CostSettings",
    "Costs",
    "HvtnasError",
    "MetaFormer",
    "ModelSummary",
    "__version__",
    "build_model",
    "measure_costs",
    "resolve_config",
    "summarize",
]
