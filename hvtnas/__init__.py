"""hvtnas: neural architecture search over the MetaFormer design space of hierarchical ViTs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hvtnas._lazy import lazy_getattr

if TYPE_CHECKING:
    from hvtnas.config import ArchConfig
    from hvtnas.costs import Costs, CostSettings, measure_costs
    from hvtnas.errors import ConfigError, HvtnasError
    from hvtnas.models import MIXERS, MetaFormer, build_model, resolve_config
    from hvtnas.summary import ModelSummary, summarize

__version__ = "0.1.0"

# imported on first use (PEP 562): `import hvtnas` stays cheap, so the command line can take
# over Ctrl-C before torch loads (hvtnas.cli)
_LAZY = {
    "ArchConfig": "hvtnas.config",
    "Costs": "hvtnas.costs",
    "CostSettings": "hvtnas.costs",
    "measure_costs": "hvtnas.costs",
    "ConfigError": "hvtnas.errors",
    "HvtnasError": "hvtnas.errors",
    "MIXERS": "hvtnas.models",
    "MetaFormer": "hvtnas.models",
    "build_model": "hvtnas.models",
    "resolve_config": "hvtnas.models",
    "ModelSummary": "hvtnas.summary",
    "summarize": "hvtnas.summary",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


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
