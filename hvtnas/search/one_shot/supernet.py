"""A weight-sharing supernet over a search space: every point of the space is a path through it.

The supernet holds one tensor per *slot*; a sub-network's parameter takes the leading corner of
its slot (``weight[:out, :in]``), so widths, MLP ratios and head counts share weights by slicing
(AutoFormer's weight entanglement), and a stage of depth k uses the first k blocks' slots. A slot
belongs to one place of the network (block j of stage i's mixer, FFN, norms; a stage's
downsampling, positional encoding; the stem, the head) and, for the parts whose options compute
different functions, to one option: each candidate token mixer of a block has weights of its own
(single-path one-shot, SPOS), and so do stems, downsamplings and positional encodings (see
``slot_of``).

A path is not a second implementation of the model: it is the module ``build_model`` makes for
that point, run by ``torch.func.functional_call`` with its parameters replaced by slices of the
slots. ``extract`` builds the same module and copies the slices in, so the standalone model's
outputs equal the supernet path's, bit for bit in eval mode. Buffers stay with each path's module
(BatchNorm statistics are per sub-network; ``recalibrate_batchnorm`` re-estimates them).

Which slots exist and how large they are is worked out once, when the supernet is built, from
points of the space that together reach every option of every choice with every range at its
largest value (``covering_points``), plus random points.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from hvtnas.config import ArchConfig, InputConfig
from hvtnas.errors import ConfigError, HvtnasError
from hvtnas.models.build import build_model
from hvtnas.models.layers import NORMS
from hvtnas.models.metaformer import MetaFormer
from hvtnas.space import ChoiceLeaf, SearchSpace, _is_leaf

SamplingRule = Literal["uniform", "sandwich"]
PATH_CACHE = 32  # path modules kept (their buffers and structure; no parameters of their own)
SAMPLE_ATTEMPTS = 100  # random draws before giving up on a space whose points are mostly invalid
ACCEPT_ATTEMPTS = 1000  # random points before giving up on finding one that ``accept`` takes


# a path's parameter name -> (its slot's key, its shape, the equal parts stacked along each dimension)
PathLayout = dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]]


class SupernetError(HvtnasError):
    """A space (or a point) the supernet cannot share weights over; the message says why."""


@dataclass
class Slot:
    """Where a shared tensor sits in the network, for messages and the checkpoint's index."""

    place: str  # stages[1].blocks[2].mixer {"kind": "window", ..., "window_size": 7}
    parameter: str  # the parameter's name inside that part ("qkv.weight")
    shape: tuple[int, ...]


# ---------------------------------------------------------------------------------- choosing
def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


class PathChooser:
    """A stand-in Optuna trial that picks one point of a space (``SearchSpace.sample`` asks it).

    ``numbers``: ranges and numeric choices at their ``max``, ``min`` or a ``random`` value;
    ``fixed`` values win (covering points fix one option each); other choices take their first
    option (``categories="first"``) or a random one. Random draws use torch's global generator,
    so a resumed training (which restores it) draws what an uninterrupted one would have."""

    def __init__(
        self,
        numbers: Literal["max", "min", "random"] = "random",
        categories: Literal["first", "random"] = "random",
        fixed: dict[str, Any] | None = None,
    ) -> None:
        self.numbers, self.categories = numbers, categories
        self.fixed = dict(fixed or {})
        self.params: dict[str, Any] = {}

    def _take(self, name: str, pick: Any) -> Any:
        if name not in self.params:  # a shared (named) leaf takes one value everywhere
            self.params[name] = self.fixed[name] if name in self.fixed else pick()
        return self.params[name]

    @staticmethod
    def _random_index(n: int) -> int:
        return int(torch.randint(n, ()).item())

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        def pick() -> Any:
            if _numeric(choices) and self.numbers != "random":
                return max(choices) if self.numbers == "max" else min(choices)
            if self.categories == "first" and not _numeric(choices):
                return choices[0]
            return choices[self._random_index(len(choices))]

        return self._take(name, pick)

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        values = range(low, high + 1, step)
        pick = {"max": lambda: values[-1], "min": lambda: low}.get(
            self.numbers, lambda: values[self._random_index(len(values))]
        )
        return self._take(name, pick)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        def pick() -> float:
            if self.numbers == "max":
                return low + math.floor((high - low) / step + 1e-9) * step if step else high
            if self.numbers == "min":
                return low
            u = float(torch.rand(()).item())
            if step:
                return low + round(u * math.floor((high - low) / step + 1e-9)) * step
            return (
                math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
                if log
                else low + u * (high - low)
            )

        return self._take(name, pick)


def choose(space: SearchSpace, chooser_args: dict[str, Any]) -> ArchConfig:
    """A valid point of ``space`` picked by a ``PathChooser`` (random draws are retried)."""
    error: ConfigError | None = None
    for _ in range(SAMPLE_ATTEMPTS):
        try:
            return space.sample(PathChooser(**chooser_args))
        except ConfigError as err:
            error = err
            if (
                chooser_args.get("numbers", "random") != "random"
                and chooser_args.get("categories") == "first"
            ):
                break  # deterministic: another draw gives the same point
    raise SupernetError(f"no valid point of {space.source} with {chooser_args}: {error}")


def covering_points(space: SearchSpace) -> Iterator[ArchConfig]:
    """Points that together reach every option of every choice (with the choices it sits under),
    with every range and numeric choice at its largest value: the slots and their largest shapes."""
    conditions: list[dict[str, Any]] = [{}]

    def walk(node: Any, fixed: dict[str, Any]) -> None:
        if _is_leaf(node):
            parsed = space.nodes[id(node)]
            if isinstance(parsed.leaf, ChoiceLeaf):
                for label, option in zip(parsed.labels, parsed.leaf.choice, strict=True):
                    here = {**fixed, parsed.name: label}
                    conditions.append(here)
                    walk(option, here)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value, fixed)
        elif isinstance(node, list):
            for value in node:
                walk(value, fixed)

    walk(space.tree, {})
    for fixed in conditions:
        for numbers in ("max", "min"):  # a point invalid at the largest values may be valid at the smallest
            try:
                yield space.sample(PathChooser(numbers=numbers, categories="first", fixed=fixed))
                break
            except ConfigError:
                continue


# ---------------------------------------------------------------------------------- slots
def _fragment(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


# Fields of a stem or downsampling config that change neither the shapes nor the meaning of its
# convolution or linear weights: options differing only in these share those weights.
_WEIGHT_NEUTRAL_FIELDS = ("norm", "norm_position", "padding", "bias")


def _weight_structure(part: Any) -> dict[str, Any]:
    """A stem's or downsampling's config without its weight-neutral fields."""
    return {k: v for k, v in _fragment(part).items() if k not in _WEIGHT_NEUTRAL_FIELDS}


def slot_of(
    arch: ArchConfig, name: str, ffn_per_kind: bool = False, shared_parts: bool = False
) -> tuple[str, str]:
    """(place, parameter) of a sub-network's parameter: the part of the network and the choice
    it belongs to, and the parameter's name inside that part. Points whose parameters have the
    same (place, parameter) share one slot.

    Token mixers, stems, downsamplings and positional encodings are keyed by their whole config:
    each option has weights of its own (single-path one-shot). With ``shared_parts``, stems and
    downsamplings are keyed by what their convolution (or linear) weights compute instead:
    options that differ only in their norm, its position, padding or bias share those weights
    (the 7x7 overlapping stems; the 2x2 and the 3x3 conv downsamplings), and their norms a
    per-channel slot by place. They make the residual stream (a mixer only adds to it), so with
    weights per option each option hands the shared blocks after it channels in a basis of its
    own; sharing raised sub-networks' inherited accuracies but not their ranking (README), hence
    off by default. FFNs share their linear layers across kinds and activations (a Mix-FFN is an
    MLP with a depthwise conv inside), and the classifier across head norms (an MLP head has its
    own): the largest share of the parameters gets the most updates. A classifier that reads the
    raw residual stream (no head norm and no output norm on the last stage: PVTv2's head without
    its stage norm) has its own: the stream's scale is the path's, not the unit scale the
    normalised heads' shared classifier is trained for (sharing it, such paths reached training
    losses of ~50 and their steps pulled the shared weights around). Norms and layer/residual
    scales are keyed by their place only: per-channel affine parameters of every norm kind share
    one slot, so that no slot depends on two independent choices (an output norm and the norm's
    kind), which the points that build the supernet could not all reach. ``ffn_per_kind``: every
    FFN option (kind, activation, bias) of a block has linear layers of its own instead."""
    parts = name.split(".")
    if parts[0] == "stem":
        if not shared_parts:
            return f"stem {json.dumps(_fragment(arch.stem), sort_keys=True)}", ".".join(parts[1:])
        if parts[1] == "norm":  # the stem's output norm, of whichever kind
            return "stem.norm", ".".join(parts[2:])
        return f"stem {json.dumps(_weight_structure(arch.stem), sort_keys=True)}", ".".join(parts[1:])
    if parts[0] == "head":
        if parts[1] == "norm":
            return "head.norm", ".".join(parts[2:])
        head: dict[str, Any] = {
            "mlp_ratio": arch.head.mlp_ratio,
            "act": arch.head.act if arch.head.mlp_ratio else None,
        }
        if arch.head.norm is None and not arch.stages[-1].out_norm:
            head["input"] = "unnormalized"  # the raw residual stream: its own classifier (why: slot_of)
        return f"head {json.dumps(head, sort_keys=True)}", ".".join(parts[1:])
    if parts[0] != "stages":
        raise SupernetError(f"parameter {name!r} is outside the stem, stages and head: no slot for it")
    i, stage = int(parts[1]), arch.stages[int(parts[1])]
    where, rest = parts[2], parts[3:]
    choice: Any = None
    if where == "blocks":
        first_block = 1 if i > 0 and arch.downsample.kind == "pooling_attention" else 0
        j, sub, rest = int(rest[0]) + first_block, rest[1], rest[2:]
        place = f"stages[{i}].blocks[{j}].{sub}"
        choice = stage.mixer_for_block(j) if sub == "mixer" else None
        if sub == "ffn" and ffn_per_kind:
            choice = stage.ffn
    elif where == "downsample" and arch.downsample.kind == "pooling_attention":
        # MViTv2's transition block: its attention is the stage's first mixer
        sub, rest = rest[0], rest[1:]
        place = f"stages[{i}].downsample.{sub}"
        choice = stage.mixers[0] if sub == "attention" else None
    elif where == "downsample" and not shared_parts:
        place, choice = f"stages[{i}].downsample", arch.downsample
    elif where == "downsample" and rest[0] in ("pre_norm", "post_norm"):  # of whichever kind
        place, rest = f"stages[{i}].downsample.{rest[0]}", rest[1:]
    elif where == "downsample":
        place, choice = f"stages[{i}].downsample", _weight_structure(arch.downsample)
    elif where in ("pos_embed", "peg"):
        place, choice = f"stages[{i}].{where}", arch.pos_embed
    elif where == "out_norm":
        place = f"stages[{i}].out_norm"
    else:
        raise SupernetError(f"parameter {name!r}: unknown part {where!r} of a stage, no slot for it")
    described = f"{place} {json.dumps(_fragment(choice), sort_keys=True)}" if choice is not None else place
    return described, ".".join(rest)


def _path_key(arch: ArchConfig) -> str:
    """A path module's identity: the whole architecture but its name and notes (drop path and
    dropout change how the module trains)."""
    return json.dumps(arch.model_dump(mode="json", exclude={"name", "metadata"}), sort_keys=True)


def _slot_key(place: str, parameter: str) -> str:
    # ParameterDict keys may not contain "."; a digest keeps them short and stable
    return "s" + hashlib.sha1(f"{place}|{parameter}".encode()).hexdigest()[:20]


def _tile(tensor: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``tensor`` repeated to cover ``shape``, cut to it: a slot's initial value from the
    largest initialised parameter seen (constants stay constants, random weights stay random)."""
    if tensor.ndim == 0:  # a scalar (StarReLU's scale and bias)
        return tensor.clone()
    reps = [-(-m // s) for m, s in zip(shape, tensor.shape, strict=True)]
    return tensor.repeat(*reps)[tuple(slice(0, m) for m in shape)].clone()


# fused projections whose output stacks equal parts (q, k, v): each part is sliced on its own
FUSED_PROJECTIONS = {"qkv": 3, "kv": 2}


def _stacked_parts(module: nn.Module, name: str, ndim: int) -> tuple[int, ...]:
    """Per dimension of the parameter ``name`` of ``module``, how many equal parts are stacked
    along it, each of which a narrower network has a narrower copy of (1: none): a fused
    projection's output (``qkv.weight``: 3 along dim 0, q, k and v), and the input of a child
    its parent lists in ``stacked_inputs`` (Swin's patch merging: the four pixels of a 2x2
    neighbourhood, C channels each; the input dim of its linear, the features of its norm), laid
    out part by part, so that a narrow network's second part would otherwise take the wide one's
    first part's last channels."""
    parts = [1] * ndim
    owner_name, _, param_name = name.rpartition(".")
    parent_name, _, layer = owner_name.rpartition(".")
    if layer in FUSED_PROJECTIONS:
        parts[0] = FUSED_PROJECTIONS[layer]
    stacked = getattr(module.get_submodule(parent_name), "stacked_inputs", {}) if owner_name else {}
    if layer in stacked:
        if isinstance(module.get_submodule(owner_name), nn.Linear):
            if param_name == "weight":  # (out, in): its input features; not the bias (outputs)
                parts[1] = stacked[layer]
        elif ndim == 1:  # a norm's per-feature weight and bias
            parts[0] = stacked[layer]
    return tuple(parts)


def _slice(slot: Tensor, shape: tuple[int, ...], parts: tuple[int, ...] | None = None) -> Tensor:
    """The sub-network's ``shape`` from ``slot``: its leading corner, except along a dimension of
    ``parts`` stacked equal parts (``_stacked_parts``), where it is the leading corner of each part,
    so that the query of a narrow network is the start of the wide one's query (not a mix of its
    query and key), as AutoFormer slices qkv."""
    taken = slot
    for dim, (n, count) in enumerate(zip(shape, parts or (1,) * len(shape), strict=True)):
        if count == 1 or n % count or slot.shape[dim] % count:
            taken = taken.narrow(dim, 0, n)
            continue
        stacked = taken.unflatten(dim, (count, slot.shape[dim] // count))  # (..., parts, per part, ...)
        taken = stacked.narrow(dim + 1, 0, n // count).flatten(dim, dim + 1)  # back to (..., n, ...)
    return taken


# ---------------------------------------------------------------------------------- supernet
class Supernet(nn.Module):
    """The weight-sharing supernet of ``space``.

    ``input`` replaces every point's input (the training data's channels, resolution and
    classes); by default the space's own. ``rule``: how ``training_loss`` samples sub-networks
    per step: ``uniform`` (one random path, SPOS) or ``sandwich`` (the largest and the smallest
    path, by widths, depths and ratios with random categorical choices, plus ``sandwich_random``
    random ones; BigNAS), whose smaller paths learn the largest one's predictions with ``distill``
    (inplace distillation) and the labels without. ``ffn_per_kind``: each FFN option has weights
    of its own; ``shared_parts``: stem and downsampling options share convolutions (``slot_of``).
    ``forward`` runs the active path (``set_path``), by default the
    largest point with every choice's first option (``eval_arch``), which is what the trainer
    validates.
    """

    def __init__(
        self,
        space: SearchSpace,
        input: InputConfig | None = None,
        *,
        rule: SamplingRule = "sandwich",
        sandwich_random: int = 2,
        distill: bool = False,
        ffn_per_kind: bool = False,
        shared_parts: bool = False,
        cover_samples: int = 32,
        seed: int = 0,
        accept: Callable[[MetaFormer], bool] | None = None,
    ) -> None:
        super().__init__()
        self.space = space
        self.accept = accept
        self.input = input
        self.rule: SamplingRule = rule
        self.sandwich_random = sandwich_random
        self.distill = distill
        self.ffn_per_kind = ffn_per_kind
        self.shared_parts = shared_parts
        self.slots: dict[str, Slot] = {}
        self.weights = nn.ParameterDict()
        self._paths: OrderedDict[str, tuple[nn.Module, PathLayout]] = OrderedDict()
        self._build_slots(cover_samples, seed)
        self.eval_arch = self.point(choose(space, {"numbers": "max", "categories": "first"}))
        self.active_arch: ArchConfig | None = None

    # ------------------------------------------------------------------ points and paths
    def point(self, arch: ArchConfig) -> ArchConfig:
        """``arch`` with the supernet's input (the data's channels, resolution, classes)."""
        if self.input is None:
            return arch
        return arch.model_copy(update={"input": self.input})

    def sample(self, numbers: Literal["max", "min", "random"] = "random") -> ArchConfig:
        """A random point of the space (``numbers`` at their largest, smallest or random); a
        fully random one among those whose model ``accept`` takes (uniform constraint sampling).
        ``accept`` gets the path's module (parameters on the meta device), the one the step then
        runs: costs are counted on it without a second build."""
        if numbers != "random" or self.accept is None:
            return self.point(choose(self.space, {"numbers": numbers, "categories": "random"}))
        for _ in range(ACCEPT_ATTEMPTS):
            arch = self.point(choose(self.space, {"numbers": "random", "categories": "random"}))
            if self.accept(self._path(arch)[0]):
                return arch
        raise SupernetError(
            f"none of {ACCEPT_ATTEMPTS} random points of {self.space.source} is within the experiment's "
            "constraints: loosen them, or set one_shot.constrained_sampling: false"
        )

    def set_path(self, arch: ArchConfig | None) -> None:
        """Make ``forward`` run ``arch`` (None: ``eval_arch``)."""
        self.active_arch = None if arch is None else self.point(arch)

    def _path(self, arch: ArchConfig) -> tuple[nn.Module, PathLayout]:
        """The module ``build_model`` makes for ``arch`` (cached, parameters on the meta device:
        they come from the slots) and, per parameter, its slot key, shape and stacked parts."""
        key = _path_key(arch)
        if key in self._paths:
            self._paths.move_to_end(key)
            return self._paths[key]
        with _default_init_skipped():
            module = build_model(arch, init_weights=False)
        layout: PathLayout = {}
        for name, param in module.named_parameters():
            place, parameter = slot_of(arch, name, self.ffn_per_kind, self.shared_parts)
            slot_key = _slot_key(place, parameter)
            shape = tuple(param.shape)
            slot = self.slots.get(slot_key)
            if (
                slot is None
                or len(slot.shape) != len(shape)
                or any(n > m for n, m in zip(shape, slot.shape, strict=True))
            ):
                have = "no slot" if slot is None else f"a slot of shape {slot.shape}"
                raise SupernetError(
                    f"{place}: parameter {parameter} of shape {shape} has {have} in the supernet of "
                    f"{self.space.source}; is this architecture a point of the space?"
                )
            layout[name] = (slot_key, shape, _stacked_parts(module, name, len(shape)))
        device = self._device()
        _to_meta_parameters(module, device)
        self._paths[key] = (module, layout)
        if len(self._paths) > PATH_CACHE:
            self._paths.popitem(last=False)
        return module, layout

    def path_parameters(self, arch: ArchConfig) -> dict[str, Tensor]:
        """The sub-network's parameters: contiguous copies of its slots' corners (differentiable)."""
        _, layout = self._path(self.point(arch))
        params = {}
        for name, (key, shape, parts) in layout.items():
            slot = self.weights[key]
            value = _slice(slot, shape, parts).contiguous()
            if not value.requires_grad and slot.requires_grad:
                # under no_grad a copied slice does not require grad, while a standalone model's
                # parameter does, and ATen's matmul folds batch dimensions by requires_grad (its
                # should_fold): the same product summed in another order. Matched, so that a path
                # and its extracted model agree bit for bit.
                value.requires_grad_(True)
            params[name] = value
        return params

    def forward_path(self, arch: ArchConfig, x: Tensor) -> Tensor:
        """The logits of the sub-network ``arch`` on ``x``, with the supernet's weights."""
        arch = self.point(arch)
        module, _ = self._path(arch)
        module.train(self.training)
        return functional_call(module, self.path_parameters(arch), (x,), strict=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_path(self.active_arch or self.eval_arch, x)

    def training_loss(self, x: Tensor, y: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """The loss of one training step: the mean over the sampled paths (the trainer calls it)."""
        if self.rule == "uniform":
            return F.cross_entropy(self.forward_path(self.sample(), x), y, label_smoothing=label_smoothing)
        largest = self.forward_path(self.sample("max"), x)
        losses = [F.cross_entropy(largest, y, label_smoothing=label_smoothing)]
        if self.distill:  # inplace distillation: the largest path's predictions as fixed soft targets
            target, smoothing = largest.detach().softmax(dim=-1), 0.0
        else:
            target, smoothing = y, label_smoothing
        for arch in [self.sample("min")] + [self.sample() for _ in range(self.sandwich_random)]:
            losses.append(F.cross_entropy(self.forward_path(arch, x), target, label_smoothing=smoothing))
        return torch.stack(losses).mean()

    # ------------------------------------------------------------------ extraction
    def extract(self, arch: ArchConfig) -> MetaFormer:
        """``arch`` as a standalone model with the supernet's weights (and the path's buffers):
        ``extract(a)(x)`` equals ``set_path(a); supernet(x)``."""
        arch = self.point(arch)
        module, _ = self._path(arch)
        model = build_model(arch, init_weights=False)
        state = {name: value.detach().clone() for name, value in self.path_parameters(arch).items()}
        state.update({name: buffer.clone() for name, buffer in module.named_buffers(remove_duplicate=False)})
        # a module shared by several blocks (CoaT's per-stage position encoding) has its parameters
        # under the first block's names only; the state dict lists them under every block's
        first_name: dict[int, str] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            first = first_name.setdefault(id(param), name)
            if name not in state:
                state[name] = state[first]
        model.load_state_dict(state, strict=True)
        return model.to(self._device()).train(self.training)

    def _device(self) -> torch.device:
        return next(iter(self.weights.values())).device

    def _apply(self, fn: Any, recurse: bool = True) -> Supernet:  # .to(), .cuda(): paths follow
        super()._apply(fn, recurse)
        self._paths.clear()
        return self

    # ------------------------------------------------------------------ slots
    def _build_slots(self, cover_samples: int, seed: int) -> None:
        """Slots and their largest shapes from points built on the meta device (no memory, no
        initialisation); then each slot's initial value: the builder's convention for linear and
        conv weights (truncated normal 0.02, zero biases) and norms (ones, zeros), otherwise what
        the part's constructor makes (a relative-position table, a layer scale), tiled."""
        shapes: dict[str, tuple[int, ...]] = {}
        copy_from: dict[str, tuple[int, str]] = {}  # slot -> (point, parameter) to take its value from
        rules: dict[str, str] = {}
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            points = list(covering_points(self.space))
            points += [choose(self.space, {}) for _ in range(cover_samples)]
            points = [self.point(arch) for arch in points]
            for index, arch in enumerate(points):
                with torch.device("meta"):
                    model = build_model(arch, init_weights=False)
                for name, param in model.named_parameters():
                    place, parameter = slot_of(arch, name, self.ffn_per_kind, self.shared_parts)
                    key = _slot_key(place, parameter)
                    shape = tuple(param.shape)
                    if key in shapes and len(shapes[key]) != len(shape):
                        raise SupernetError(
                            f"{place}: parameter {parameter} has {len(shape)} dimensions in one point and "
                            f"{len(shapes[key])} in another: its weights cannot be shared by slicing"
                        )
                    shapes[key] = tuple(max(a, b) for a, b in zip(shapes.get(key, shape), shape, strict=True))
                    self.slots[key] = Slot(place, parameter, shapes[key])
                    if key not in rules:
                        rules[key] = _init_rule(model, name)
                        if rules[key] == "copy":
                            copy_from[key] = (index, name)
            values: dict[str, Tensor] = {}
            for index in sorted({i for i, _ in copy_from.values()}):
                with _default_init_skipped():
                    built = dict(build_model(points[index], init_weights=False).named_parameters())
                for key, (i, name) in copy_from.items():
                    if i == index:
                        values[key] = _tile(built[name].detach(), shapes[key])
            for key in sorted(shapes):
                if rules[key] == "copy":
                    value = values[key]
                elif rules[key] == "normal":
                    value = nn.init.trunc_normal_(torch.empty(shapes[key]), std=0.02)
                else:
                    value = torch.full(shapes[key], 1.0 if rules[key] == "ones" else 0.0)
                self.weights[key] = nn.Parameter(value)
        finally:
            torch.set_rng_state(generator_state)

    def slot_index(self) -> dict[str, dict[str, Any]]:
        """Slot key -> where it sits and its shape (what a checkpoint records beside the weights)."""
        return {
            k: {"place": s.place, "parameter": s.parameter, "shape": list(s.shape)}
            for k, s in self.slots.items()
        }


def _init_rule(model: nn.Module, name: str) -> str:
    """How a slot starts: ``normal``/``zeros`` (linear and conv weights/biases, as ``build_model``
    initialises them), ``ones``/``zeros`` (norms), ``copy`` (the constructor's value)."""
    owner_name, _, param_name = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if isinstance(owner, nn.Linear | nn.Conv2d):
        return "normal" if param_name == "weight" else "zeros"
    if isinstance(owner, (*NORMS.values(), nn.LayerNorm)) and param_name in ("weight", "bias"):
        return "ones" if param_name == "weight" else "zeros"
    return "copy"


@contextmanager
def _default_init_skipped() -> Iterator[None]:
    """Build without PyTorch's default initialisation of linear and conv layers (most of the
    build time; the slots provide those weights): their tensors are left uninitialised."""
    saved = nn.Linear.reset_parameters, nn.modules.conv._ConvNd.reset_parameters
    nn.Linear.reset_parameters = nn.modules.conv._ConvNd.reset_parameters = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Linear.reset_parameters, nn.modules.conv._ConvNd.reset_parameters = saved  # type: ignore[method-assign]


def _to_meta_parameters(module: nn.Module, device: torch.device) -> None:
    """Drop a path module's own parameters (they come from the slots) and move its buffers."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                sub._parameters[name] = nn.Parameter(
                    torch.empty_like(param, device="meta"), param.requires_grad
                )
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = buffer.to(device)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterator[Tensor] | list[Tensor]) -> int:
    """Re-estimate the running statistics of every BatchNorm of ``model`` from ``batches``
    (cumulative averages over them); returns the number of BatchNorm layers (0: nothing done).
    A sub-network's statistics differ from the supernet's other paths', so they are measured
    for it before it is evaluated."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the recalibration batches
    model.train()
    for x in batches:
        model(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return len(norms)
