"""Search spaces: an architecture config whose leaves may be choices or ranges.

A space file has the shape of an ``ArchConfig`` (see ``hvtnas/models/zoo/*.yaml``); any value may
instead be one of

- ``{choice: [a, b, ...]}``: one of the options; an option may itself hold choices and ranges,
  which then exist only when that option is chosen (a window size only under a window mixer);
- ``{int: [low, high]}`` with optional ``step`` and ``log``;
- ``{float: [low, high]}`` with optional ``step`` or ``log``;

each with an optional ``name``: leaves with the same name take the same value (a shared choice,
e.g. one mixer for every stage). Without a name, a leaf is named after where it stands, in the
form Optuna reports and groups by: ``stage2.width``, ``stage2.mixer``,
``stage2.window.window_size``, ``stem.kind``, ``pos_embed``.

Sampling asks an Optuna trial (define-by-run) for every leaf it reaches and returns a validated
``ArchConfig``; nothing else in the search needs to know how models are built.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from hvtnas.config import (
    NOT_IDENTITY,
    ArchConfig,
    _line_for,
    canonical_config,
    format_validation_error,
    load_yaml_with_lines,
)
from hvtnas.errors import ConfigError, HvtnasError
from hvtnas.io import read_text

LEAF_KEYS = ("choice", "int", "float")
MAX_MEMBERSHIP_CANDIDATES = 10_000  # loose matches verified exactly, before giving up


class NotInSpaceError(HvtnasError):
    """An architecture is not a point of a search space; the message says where it leaves it."""


class _Leaf(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str | None = None


class ChoiceLeaf(_Leaf):
    choice: list[Any] = Field(min_length=1)


class _Range(_Leaf):
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        low, high = self.bounds
        if low > high:
            raise ValueError(f"low <= high must hold, but got (low={low}, high={high})")
        if self.log and low <= 0:
            raise ValueError(f"a log range needs low > 0, but got low={low}")
        if self.log and getattr(self, "step", None) not in (None, 1):
            raise ValueError("a range cannot have both 'log' and a 'step'")
        return self

    @property
    def bounds(self) -> tuple[Any, Any]:
        raise NotImplementedError


class IntLeaf(_Range):
    int_range: tuple[int, int] = Field(alias="int")
    step: PositiveInt = 1

    @property
    def bounds(self) -> tuple[int, int]:
        return self.int_range


class FloatLeaf(_Range):
    float_range: tuple[float, float] = Field(alias="float")
    step: float | None = Field(None, gt=0)

    @property
    def bounds(self) -> tuple[float, float]:
        return self.float_range


Leaf = ChoiceLeaf | IntLeaf | FloatLeaf


class _Misses:
    """Why membership failed: of the branches given up, the one that came furthest in the file."""

    def __init__(self) -> None:
        self.order: tuple = ()
        self.furthest = "no option matches"

    def add(self, order: tuple, why: str) -> None:
        if order > self.order:
            self.order, self.furthest = order, why


class Suggester(Protocol):
    """What sampling needs from an Optuna trial (``optuna.Trial`` satisfies it)."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


@dataclass
class Node:
    """A parsed leaf: its Optuna name, where it is in the file, and its option labels."""

    leaf: Leaf
    name: str
    yaml_path: tuple
    labels: list[Any]  # choice only: what Optuna stores for each option
    condition: str  # "" or "stage2.mixer = window"


@dataclass
class Dimension:
    name: str
    kind: str  # choice, int, float
    values: str  # options or range, for display
    condition: str
    size: float  # number of distinct values (inf for a continuous range)


def _label(value: Any) -> Any:
    """A short readable label for a choice option (Optuna stores primitives only)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return "+".join(str(_label(v)) for v in value)
    if isinstance(value, dict):
        if set(value) & set(LEAF_KEYS):
            return "?"
        if isinstance(value.get("kind"), str):
            # nested parts (a stem's norm) are part of the label: options that differ only there
            # stay told apart ("overlap(kernel_size=7,norm=layernorm(eps=1e-06))")
            fixed = [f"{k}={_label(v)}" for k, v in value.items() if k != "kind" and not _is_leaf(v)]
            return value["kind"] + (f"({','.join(fixed)})" if fixed else "")
        return ",".join(f"{k}={_label(v)}" for k, v in value.items())
    return str(value)


def _scoped(name: str, value: Any) -> str:
    """Inside a stage's mixers, a mixer's own parameters are named after its kind:
    ``stage2.mixer`` + ``{kind: window, window_size: ...}`` -> ``stage2.window.window_size``."""
    if name.endswith("mixer") and isinstance(value, dict) and isinstance(value.get("kind"), str):
        return f"{name.rpartition('.')[0]}.{value['kind']}"
    return name


def _unaliased(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _unaliased(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_unaliased(value) for value in node]
    return node


def _is_leaf(node: Any) -> bool:
    return isinstance(node, dict) and any(k in node for k in LEAF_KEYS)


class SearchSpace:
    """A parsed, validated search space over ``ArchConfig``."""

    def __init__(self, tree: Any, source: str = "<space>", lines: dict[tuple, int] | None = None) -> None:
        self.source = source
        self.lines = lines or {}
        # a YAML alias is the same object in every place it is used: copied apart, so that each
        # place is a dimension of its own (leaves are shared by ``name`` only); top-level keys
        # starting with "x-" hold such anchors and are no part of the architecture
        self.tree = _unaliased(tree)
        if isinstance(self.tree, dict):
            for key in [k for k in self.tree if isinstance(k, str) and k.startswith("x-")]:
                del self.tree[key]
        tree = self.tree
        self.nodes: dict[int, Node] = {}  # id(leaf dict in tree) -> parsed leaf
        problems: list[str] = []
        self._parse(tree, (), "", "", problems)
        if problems:
            raise ConfigError(problems, source, what="search space")
        self._check_samples()

    # -------------------------------------------------------------------------- loading
    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        path = Path(path)
        data, lines = load_yaml_with_lines(read_text(path, "search space"), str(path))
        if not isinstance(data, dict):
            raise ConfigError([f"{path}: expected a mapping at the top level"])
        data.pop("experiment", None)  # the search's settings: hvtnas.search.load_search_spec reads them
        return cls(data, str(path), lines)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        """A space from a mapping (an ``experiment`` section, as in a space file, is left out)."""
        return cls({k: v for k, v in data.items() if k != "experiment"})

    def _where(self, yaml_path: tuple) -> str:
        line = _line_for(yaml_path, self.lines)
        return f"{self.source}:{line}: " if line else f"{self.source}: "

    @staticmethod
    def _child_name(prefix: str, key: Any, yaml_path: tuple) -> str:
        if yaml_path == ("stages",) and isinstance(key, int):
            return f"stage{key + 1}"
        if yaml_path == ("branches",) and isinstance(key, int):  # CrossViT's other branches
            return f"branch{key + 1}"
        if len(yaml_path) == 3 and yaml_path[::2] == ("branches", "stages") and isinstance(key, int):
            return f"{prefix.removesuffix('.stages')}.stage{key + 1}"
        if isinstance(key, int):
            return prefix  # list items other than stages do not add to the name
        if key == "mixers":
            key = "mixer"
        return f"{prefix}.{key}" if prefix else str(key)

    def _parse(self, node: Any, yaml_path: tuple, name: str, condition: str, problems: list[str]) -> None:
        if _is_leaf(node):
            kinds = [k for k in LEAF_KEYS if k in node]
            model = {"choice": ChoiceLeaf, "int": IntLeaf, "float": FloatLeaf}[kinds[0]]
            try:
                if len(kinds) > 1:
                    raise ValueError(f"a leaf is one of choice/int/float, not {' and '.join(kinds)}")
                leaf = model.model_validate(node)
            except ValidationError as err:
                for e in err.errors():
                    where = _display(
                        (*yaml_path, *(p for p in e["loc"] if p != "int_range" and p != "float_range"))
                    )
                    message = e["msg"].removeprefix("Value error, ")
                    if e["type"] == "extra_forbidden":
                        message = f"unknown key (a {kinds[0]} leaf takes: {', '.join(_leaf_keys(model))})"
                    problems.append(f"{self._where(yaml_path)}{where}: {message}")
                return
            except ValueError as err:
                problems.append(f"{self._where(yaml_path)}{_display(yaml_path)}: {err}")
                return
            leaf_name = leaf.name or name or "root"
            labels: list[Any] = []
            if isinstance(leaf, ChoiceLeaf):
                labels = [_label(option) for option in leaf.choice]
                if len(set(map(repr, labels))) < len(labels):  # e.g. two options that differ only in nesting
                    labels = [f"{label}#{i}" for i, label in enumerate(labels)]
            # registered before its options, so dimensions list a parent before what it conditions
            self.nodes[id(node)] = Node(leaf, leaf_name, yaml_path, labels, condition)
            if isinstance(leaf, ChoiceLeaf):
                for i, option in enumerate(leaf.choice):
                    condition_here = f"{leaf_name} = {labels[i]}"
                    self._parse(
                        option, (*yaml_path, "choice", i), _scoped(name, option), condition_here, problems
                    )
            return
        if isinstance(node, dict):
            for key, value in node.items():
                self._parse(
                    value, (*yaml_path, key), self._child_name(name, key, yaml_path), condition, problems
                )
        elif isinstance(node, list):
            for i, value in enumerate(node):  # a mixer pattern names its mixers' parameters by kind
                child_name = self._child_name(_scoped(name, value), i, yaml_path)
                self._parse(value, (*yaml_path, i), child_name, condition, problems)

    # -------------------------------------------------------------------------- sampling
    def sample(self, trial: Suggester) -> ArchConfig:
        """Ask ``trial`` for every leaf the sample reaches; return the validated architecture."""
        data = self._materialize(self.tree, trial)
        try:
            return ArchConfig.model_validate(data)
        except ValidationError as err:
            chosen = getattr(trial, "params", None)
            where = f" (sampled {chosen})" if chosen else ""
            raise ConfigError(format_validation_error(err), f"sample of {self.source}{where}") from None

    def _materialize(self, node: Any, trial: Suggester) -> Any:
        if _is_leaf(node):
            parsed = self.nodes[id(node)]
            leaf = parsed.leaf
            if isinstance(leaf, ChoiceLeaf):
                label = trial.suggest_categorical(parsed.name, parsed.labels)
                return self._materialize(leaf.choice[parsed.labels.index(label)], trial)
            low, high = leaf.bounds
            if isinstance(leaf, IntLeaf):
                return trial.suggest_int(parsed.name, low, high, step=leaf.step, log=leaf.log)
            return trial.suggest_float(parsed.name, low, high, step=leaf.step, log=leaf.log)
        if isinstance(node, dict):
            return {key: self._materialize(value, trial) for key, value in node.items()}
        if isinstance(node, list):
            return [self._materialize(value, trial) for value in node]
        return node

    def _check_samples(self) -> None:
        """The whole space is valid before anything runs: the base sample (every choice's first
        option, every range's low end) and every option and both ends of every range with the
        rest at base must give a valid architecture (a bad option is found now, not in trial 137).

        A problem is reported once, on the line of the field it concerns: without a condition
        when no choice changes it, else ``with <choice> = <value>`` naming the choice that causes
        it. Problems are ordered by line."""
        base_trial = _SweepTrial({})
        base = self._sweep_problems(base_trial)
        sweeps: list[tuple[str, Any, dict[str, tuple[int, str]]]] = []
        for parsed in self.nodes.values():
            values = parsed.labels if isinstance(parsed.leaf, ChoiceLeaf) else list(parsed.leaf.bounds)
            if isinstance(parsed.leaf, FloatLeaf):  # a fractional value finds an integer field
                low, high = parsed.leaf.bounds
                values.append(low + 0.5 if low + 0.5 <= high else (low + high) / 2)
            for value in {repr(v): v for v in values}.values():
                sweeps.append((parsed.name, value, self._sweep_problems(_SweepTrial({parsed.name: value}))))
        # a field wrong in the base sample is reported once (whatever other dimensions choose);
        # other problems once per distinct message
        found: dict[str, tuple[int, str]] = {}  # field path (base) or problem -> (line, text)
        for line, text in base.values():
            field = _field(text)
            # caused by a choice when another value of that choice clears the field
            causes = [name for name, _, problems in sweeps if field not in map(_field, problems)]
            if causes and causes[0] in base_trial.params:
                text = f"with {causes[0]} = {base_trial.params[causes[0]]}: {text}"
            found.setdefault(field, (line, text))
        at_base = set(found)
        for name, value, problems in sweeps:
            for line, text in problems.values():
                field = _field(text)
                if field in at_base or text in found:  # reported already (two bad options: two lines)
                    continue
                leaf = next(n for n in self.nodes.values() if n.name == name)
                if isinstance(leaf.leaf, FloatLeaf) and "fractional part" in text:
                    message = (
                        f"{name} is a float range but the field takes integers: use {{int: [low, high]}}"
                    )
                    found[text] = (line, f"{field}: {message}")
                else:
                    found[text] = (line, f"with {name} = {value}: {text}")
        if found:
            ordered = sorted(found.values(), key=lambda item: (item[0], item[1]))
            problems = [
                f"{self.source}:{line}: {text}" if line else f"{self.source}: {text}"
                for line, text in ordered
            ]
            raise ConfigError(list(dict.fromkeys(problems)), self.source, what="search space")

    def _sweep_problems(self, trial: _SweepTrial) -> dict[str, tuple[int, str]]:
        """The problems of one sweep sample: ``field: message`` -> (line in the file, that text)."""
        try:
            ArchConfig.model_validate(self._materialize(self.tree, trial))
        except ValidationError as err:
            lines: dict[tuple, int] = {}
            self._sample_lines(self.tree, trial, (), (), lines)
            out: dict[str, tuple[int, str]] = {}
            plain = format_validation_error(err)
            located = format_validation_error(err, "<s>", lines)
            for text, where in zip(plain, located, strict=True):
                line = where.removeprefix("<s>:").partition(":")[0]
                out[text] = (int(line) if line.isdigit() else 0, text)
            return out
        return {}

    def _sample_lines(
        self, node: Any, trial: Suggester, out_path: tuple, yaml_path: tuple, out: dict
    ) -> None:
        """The file's line of every field of the sample ``trial`` gives (its path in the sampled
        config -> the line of the value it came from)."""
        line = _line_for(yaml_path, self.lines)
        if line:
            out[out_path] = line
        if _is_leaf(node):
            parsed = self.nodes[id(node)]
            if isinstance(parsed.leaf, ChoiceLeaf):
                index = parsed.labels.index(trial.suggest_categorical(parsed.name, parsed.labels))
                self._sample_lines(
                    parsed.leaf.choice[index], trial, out_path, (*yaml_path, "choice", index), out
                )
        elif isinstance(node, dict):
            for key, value in node.items():
                self._sample_lines(value, trial, (*out_path, key), (*yaml_path, key), out)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                self._sample_lines(value, trial, (*out_path, i), (*yaml_path, i), out)

    # -------------------------------------------------------------------------- membership
    def params_for(self, arch: ArchConfig) -> dict[str, Any]:
        """The Optuna parameters under which sampling gives ``arch`` (compared by
        ``canonical_config``: name, notes and regularisation aside), e.g. for
        ``study.enqueue_trial``. Raises ``NotInSpaceError`` naming the first field where ``arch``
        leaves the space.

        Options are first matched loosely (a field an option leaves out may hold anything), then
        each candidate is sampled and compared exactly, so fields the space leaves at their
        defaults are checked too."""
        target = canonical_config(arch)
        misses = _Misses()
        for checked, params in enumerate(self._match(self.tree, target, (), (), {}, misses)):
            if checked >= MAX_MEMBERSHIP_CANDIDATES:
                break
            sampled = self._materialize(self.tree, _SweepTrial(params))
            try:
                got = canonical_config(ArchConfig.model_validate(sampled))
            except ValidationError:
                continue
            if got == target:
                return params
            path, ours, theirs = _first_difference(got, target)
            # a candidate that matched loosely everywhere says more than any branch given up early
            misses.add((math.inf,), f"{_display(path)}: the space gives {ours!r}, not {theirs!r}")
        name = arch.name or "the architecture"
        raise NotInSpaceError(f"{name} is not a point of {self.source}: {misses.furthest}")

    def contains(self, arch: ArchConfig) -> bool:
        try:
            self.params_for(arch)
        except NotInSpaceError:
            return False
        return True

    def _match(
        self, node: Any, value: Any, path: tuple, order: tuple, params: dict[str, Any], misses: _Misses
    ) -> Iterator[dict[str, Any]]:
        """Every assignment of the leaves under ``node`` (extending ``params``) that may give
        ``value``: exact on what ``node`` states, loose on what it leaves out. ``order`` is the
        position in the file (to report the miss that came furthest)."""
        if _is_leaf(node):
            parsed = self.nodes[id(node)]
            leaf = parsed.leaf
            if isinstance(leaf, ChoiceLeaf):
                matched = False
                for label, option in zip(parsed.labels, leaf.choice, strict=True):
                    if params.get(parsed.name, label) == label:
                        chosen = {**params, parsed.name: label}
                        for found in self._match(option, value, path, order, chosen, misses):
                            matched = True
                            yield found
                if not matched and not any(isinstance(o, dict | list) for o in leaf.choice):
                    options = ", ".join(map(repr, leaf.choice))
                    misses.add((*order, math.inf), f"{_display(path)}: {value!r} is not one of {options}")
                return
            if _in_range(leaf, value) and params.get(parsed.name, value) == value:
                yield {**params, parsed.name: value}
            else:
                low, high = leaf.bounds
                misses.add(order, f"{_display(path)}: {value!r} is not in the range [{low}, {high}]")
            return
        if isinstance(node, str) and isinstance(value, dict) and "kind" in value:
            node = {"kind": node}  # the YAML shorthand `norm: layernorm`
        if isinstance(node, dict) and isinstance(value, dict):
            yield from self._match_items(list(node.items()), 0, value, path, order, params, misses)
        elif isinstance(node, list) and isinstance(value, list) and len(node) == len(value):
            yield from self._match_items(list(enumerate(node)), 0, value, path, order, params, misses)
        elif isinstance(node, dict | list) or isinstance(value, dict | list):
            misses.add(order, f"{_display(path)}: {_short(value)} does not fit the space's {_short(node)}")
        elif node == value:
            yield params
        else:
            misses.add(order, f"{_display(path)}: {value!r}, the space has {node!r}")

    def _match_items(
        self,
        items: list[tuple[Any, Any]],
        index: int,
        value: Any,
        path: tuple,
        order: tuple,
        params: dict[str, Any],
        misses: _Misses,
    ) -> Iterator[dict[str, Any]]:
        """``_match`` of ``items[index:]`` (a mapping's or list's entries) in turn."""
        if index == len(items):
            yield params
            return
        key, child = items[index]
        no_heads = path[:1] == ("stages",) and key in ("heads", "head_dim") and value.get(key) is None
        if (*path, key) in NOT_IDENTITY or no_heads:  # no part of the model: left to the space
            yield from self._match_items(items, index + 1, value, path, order, params, misses)
            return
        if isinstance(value, dict) and key not in value:
            misses.add((*order, index), f"{_display((*path, key))}: not a field of the architecture")
            return
        for partial in self._match(child, value[key], (*path, key), (*order, index), params, misses):
            yield from self._match_items(items, index + 1, value, path, order, partial, misses)

    # -------------------------------------------------------------------------- description
    def dimensions(self) -> list[Dimension]:
        out: dict[str, Dimension] = {}
        for parsed in self.nodes.values():
            leaf = parsed.leaf
            if parsed.name in out:
                continue  # a shared leaf is one dimension
            if isinstance(leaf, ChoiceLeaf):
                kind, values = "choice", ", ".join(map(str, parsed.labels))
            else:
                low, high = leaf.bounds
                kind = "int" if isinstance(leaf, IntLeaf) else "float"
                values = (
                    f"[{low}, {high}]"
                    + (" log" if leaf.log else "")
                    + (f" step {leaf.step}" if leaf.step else "")
                )
            out[parsed.name] = Dimension(parsed.name, kind, values, parsed.condition, _leaf_size(leaf))
        return list(out.values())

    def size(self) -> float:
        """The number of distinct architectures (shared leaves counted once; ``inf`` with a
        continuous range)."""
        return self._count(self.tree, set())

    def _count(self, node: Any, seen: set[str]) -> float:
        if _is_leaf(node):
            parsed = self.nodes[id(node)]
            if parsed.name in seen:
                return 1
            seen.add(parsed.name)
            if isinstance(parsed.leaf, ChoiceLeaf):
                # options are alternatives; names inside one option do not constrain the others
                return sum(self._count(option, set(seen)) for option in parsed.leaf.choice)
            return _leaf_size(parsed.leaf)
        if isinstance(node, dict):
            return math.prod(self._count(v, seen) for v in node.values())
        if isinstance(node, list):
            return math.prod(self._count(v, seen) for v in node)
        return 1


def _leaf_keys(model: type[_Leaf]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _leaf_size(leaf: Leaf) -> float:
    if isinstance(leaf, ChoiceLeaf):
        return len(leaf.choice)
    low, high = leaf.bounds
    if isinstance(leaf, IntLeaf):
        return len(range(low, high + 1, leaf.step))
    return math.inf if leaf.step is None else math.floor((high - low) / leaf.step + 1e-9) + 1


class _SweepTrial:
    """A stand-in trial: the given values, otherwise every choice's first option and every
    range's low end."""

    def __init__(self, fixed: dict[str, Any]) -> None:
        self.fixed = fixed
        self.params: dict[str, Any] = {}

    def _take(self, name: str, default: Any) -> Any:
        value = self.fixed.get(name, self.params.get(name, default))
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        value = self._take(name, choices[0])
        return value if value in choices else choices[0]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self._take(name, low)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return self._take(name, low)


def _field(problem: str) -> str:
    """The field path a ``field.path: message`` problem line is about."""
    return problem.partition(": ")[0]


def _in_range(leaf: IntLeaf | FloatLeaf, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    low, high = leaf.bounds
    if not low <= value <= high:
        return False
    if isinstance(leaf, IntLeaf):
        return value == int(value) and (int(value) - low) % leaf.step == 0
    if leaf.step is None:
        return True
    steps = (value - low) / leaf.step
    return abs(steps - round(steps)) < 1e-9


def _first_difference(ours: Any, theirs: Any, path: tuple = ()) -> tuple[tuple, Any, Any]:
    """Where two config trees first differ: (path, our value, their value)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in [*ours, *(k for k in theirs if k not in ours)]:
            if ours.get(key) != theirs.get(key):
                return _first_difference(ours.get(key), theirs.get(key), (*path, key))
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            if a != b:
                return _first_difference(a, b, (*path, i))
    return path, ours, theirs


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _display(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def iter_samples(space: SearchSpace, n: int, seed: int = 0) -> Iterator[ArchConfig]:
    """``n`` random architectures (Optuna's random sampler, seeded)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        yield space.sample(study.ask())
