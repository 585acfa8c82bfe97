"""Cost axes of an architecture: FLOPs (papers' convention), parameters, memory, latency; cached."""

from hvtnas.costs.cache import CostCache, default_cache_path
from hvtnas.costs.flops import FlopCount, count_flops
from hvtnas.costs.latency import LatencyResult, LatencySettings, measure_latency
from hvtnas.costs.measure import DETECTION, SEGMENTATION, Costs, CostSettings, Resolution, measure_costs
from hvtnas.costs.memory import MemoryCost, measure_memory

__all__ = [
    "DETECTION",
    "SEGMENTATION",
    "CostCache",
    "CostSettings",
    "Costs",
    "FlopCount",
    "LatencyResult",
    "LatencySettings",
    "MemoryCost",
    "Resolution",
    "count_flops",
    "default_cache_path",
    "measure_costs",
    "measure_latency",
    "measure_memory",
]
