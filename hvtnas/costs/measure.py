"""``measure_costs``: every cost axis of one architecture, typed, cached."""

from __future__ import annotations

import re
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from hvtnas.config import MAX_RESOLUTION
from hvtnas.costs.cache import CostCache, cost_key
from hvtnas.costs.flops import count_flops
from hvtnas.costs.latency import LatencyResult, LatencySettings, device_name, measure_latency
from hvtnas.costs.memory import measure_memory
from hvtnas.models.build import ModelSpec, build_model, resolve_config
from hvtnas.models.metaformer import MetaFormer
from hvtnas.summary import count_params, params_per_part


class Resolution(BaseModel):
    """An input size. As a string it is written WIDTHxHEIGHT, the way detection papers write it
    (``1280x800``: 800 rows, 1280 columns); a single number is a square."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    height: PositiveInt = Field(le=MAX_RESOLUTION)  # larger is a typo, not an input (hvtnas.config)
    width: PositiveInt = Field(le=MAX_RESOLUTION)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, int):
            return {"height": value, "width": value}
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", value)
            if not match:
                raise ValueError(f"a resolution is WIDTHxHEIGHT or one number, got {value!r}")
            width, height = int(match[1]), int(match[2] or match[1])
            return {"height": height, "width": width}
        return value

    @property
    def hw(self) -> tuple[int, int]:
        return (self.height, self.width)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


DETECTION = Resolution(height=800, width=1280)  # Swin / PVT detection FLOPs are reported at 1280x800
SEGMENTATION = Resolution(height=512, width=512)


class CostSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: Resolution | None = None  # classification cost; None: the config's input resolution
    dense_resolution: Resolution | None = DETECTION  # backbone (pyramid) cost; None: skip
    memory: bool = False  # activation memory at both resolutions
    latency: LatencySettings | None = None  # None: do not measure latency


class MemoryFigures(BaseModel):
    method: str
    train_activation_bytes: int
    train_activation_bytes_dense: int | None = None
    inference_peak_bytes: int | None = None


class Costs(BaseModel):
    """All cost axes of one architecture. FLOPs are multiply-accumulates (the papers' GFLOPs)."""

    name: str | None
    params: int
    params_per_part: dict[str, int]
    resolution: Resolution
    flops: int
    flops_attention: int  # the Q K^T + A V part of ``flops``
    flops_per_part: dict[str, int]
    dense_resolution: Resolution | None = None
    flops_dense: int | None = None  # stem + stages only (the pyramid), at dense_resolution
    memory: MemoryFigures | None = None
    latency: LatencyResult | None = None
    cache_hits: int = Field(0, description="how many of the figures came from the cache")

    def metric(self, name: str) -> float:
        """The figure an objective or constraint ``name`` reads (flops, flops_dense, params,
        latency: median ms, memory: training activation bytes)."""
        if name == "flops":
            return float(self.flops)
        if name == "flops_dense":
            return float(self.flops_dense)
        if name == "params":
            return float(self.params)
        if name == "latency":
            return float(self.latency.median_ms)
        if name == "memory":
            return float(self.memory.train_activation_bytes)
        raise KeyError(name)


def measure_costs(
    spec: ModelSpec | MetaFormer, settings: CostSettings | None = None, cache: CostCache | None = None
) -> Costs:
    """Measure (or read from ``cache``) the costs of a zoo name, config file, ``ArchConfig`` or a
    model built by ``build_model`` (which is then not built again)."""
    settings = settings or CostSettings()
    prebuilt = spec if isinstance(spec, MetaFormer) else None
    cfg = prebuilt.arch_config if prebuilt is not None else resolve_config(spec)
    resolution = settings.resolution or Resolution(height=cfg.input.resolution, width=cfg.input.resolution)
    channels = cfg.input.channels
    model = prebuilt  # a real model (memory, latency), built only when one of them is measured
    meta_model = prebuilt  # parameters and FLOPs need shapes only: built on the meta device
    hits = 0

    def get_model():
        nonlocal model
        if model is None:
            model = build_model(cfg, init_weights=False)  # costs do not depend on the values
        return model

    def get_meta_model():
        nonlocal meta_model
        if meta_model is None:
            with torch.device("meta"):  # no memory, no initialisation: ~0.05 s for swin_s
                meta_model = build_model(cfg, init_weights=False)
        return meta_model

    def cached(kind: str, key_settings: dict[str, Any], compute) -> Any:
        nonlocal hits
        if cache is None:
            return compute()
        key = cost_key(kind, cfg, key_settings)
        value = cache.get(key)
        if value is None:
            value = compute()
            cache.put(key, kind, value)
        else:
            hits += 1
        return value

    def params() -> dict[str, Any]:
        return {"total": count_params(get_meta_model()), "parts": params_per_part(get_meta_model())}

    def flops(res: Resolution, backbone_only: bool) -> Any:
        def compute() -> dict[str, Any]:
            count = count_flops(get_meta_model(), res.hw, channels, backbone_only=backbone_only)
            return {
                "total": count.total,
                "by_module": count.by_module,
                "attention": count.by_operator.get("scaled_dot_product_attention", 0),
            }

        return cached("flops_dense" if backbone_only else "flops", {"resolution": res.hw}, compute)

    p = cached("params", {}, params)
    f = flops(resolution, backbone_only=False)
    result = Costs(
        name=cfg.name,
        params=p["total"],
        params_per_part=p["parts"],
        resolution=resolution,
        flops=f["total"],
        flops_attention=f["attention"],
        flops_per_part=f["by_module"],
    )
    if settings.dense_resolution is not None:
        result.dense_resolution = settings.dense_resolution
        result.flops_dense = flops(settings.dense_resolution, backbone_only=True)["total"]
    if settings.memory:
        device = torch.device(settings.latency.device if settings.latency else "cpu")

        def memory() -> dict[str, Any]:
            m = get_model().to(device)
            main = measure_memory(m, resolution.hw, in_channels=channels)
            out = {
                "method": main.method,
                "train_activation_bytes": main.train_activation_bytes,
                "inference_peak_bytes": main.inference_peak_bytes,
            }
            if settings.dense_resolution is not None:
                dense = measure_memory(
                    m, settings.dense_resolution.hw, in_channels=channels, backbone_only=True
                )
                out["train_activation_bytes_dense"] = dense.train_activation_bytes
            return out

        key = {
            "resolution": resolution.hw,
            "dense": settings.dense_resolution and settings.dense_resolution.hw,
            "device": device_name(device),
        }
        result.memory = MemoryFigures(**cached("memory", key, memory))
    if settings.latency is not None:
        lat = settings.latency
        device = torch.device(lat.device)
        key = {
            **lat.model_dump(),
            "resolution": resolution.hw,
            "device_name": device_name(device),
            "torch": torch.__version__,
            "threads": lat.threads or torch.get_num_threads(),
        }
        result.latency = LatencyResult(
            **cached(
                "latency",
                key,
                lambda: measure_latency(get_model(), resolution.hw, lat, channels).model_dump(mode="json"),
            )
        )
    result.cache_hits = hits
    return result


__all__ = ["DETECTION", "SEGMENTATION", "CostSettings", "Costs", "Resolution", "measure_costs"]
