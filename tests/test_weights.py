"""Weights in: hvtnas, timm and official checkpoint files -> ``build_model(checkpoint=)``,
``hvtnas convert`` and ``hvtnas train --weights``; clear errors for files that do not fit."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from hvtnas import build_model
from hvtnas.cli import app
from hvtnas.models.weights import WeightsError, load_weights, read_state_dict, save_weights
from tests.conftest import tiny_config
from tests.train_helpers import small_arch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _reference import import_timm

try:
    timm = import_timm(install=False)
except ImportError as err:
    timm, NO_TIMM = None, f"timm cannot be imported ({err}); CI installs it: pip install --no-deps timm"
else:
    NO_TIMM = ""
needs_timm = pytest.mark.skipif(timm is None, reason=NO_TIMM)
runner = CliRunner()


def _model(**overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_config(["window", "shifted_window"], **overrides)).eval()


def test_safetensors_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    model = _model()
    path = save_weights(model, tmp_path / "tiny.safetensors")
    loaded = build_model(model.arch_config, checkpoint=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:  # the file says what architecture it holds
        assert json.loads(f.metadata()["arch_config"])["name"] == "tiny"


def test_weights_only_torch_files_wrapped_as_training_scripts_save_them(tmp_path: Path) -> None:
    model = _model()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # DDP's prefix
    torch.save({"model": state, "epoch": 3}, tmp_path / "ckpt.pth")
    loaded = build_model(model.arch_config, checkpoint=tmp_path / "ckpt.pth").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    torch.save({"model": _model().state_dict(), "opt": Path("x")}, tmp_path / "pickle.pt")
    with pytest.raises(WeightsError, match=r"weights_only=True"):
        read_state_dict(tmp_path / "pickle.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        read_state_dict(tmp_path / "missing.safetensors")


def test_a_file_for_another_architecture_names_keys_and_shapes(tmp_path: Path) -> None:
    path = save_weights(_model(), tmp_path / "tiny.safetensors")
    other = tiny_config(["window", "shifted_window"])
    other["stages"][3]["width"] = 96  # last stage wider
    with pytest.raises(WeightsError) as info:
        build_model(other, checkpoint=path)
    message = str(info.value)
    assert "\n" not in message and "closest key layout (hvtnas" in message
    assert "shapes differ (31): stages.3.downsample.conv.weight: file (64, 48, 2, 2) vs model (96," in message
    deeper = tiny_config(["window", "shifted_window", "window"])
    with pytest.raises(WeightsError, match=r"missing from the file \(\d+\): stages\.0\.blocks\.2\."):
        build_model(deeper, checkpoint=path)
    result = runner.invoke(app, ["convert", str(path), "--model", "pvt_v2_b0", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "does not fit model pvt_v2_b0" in result.output
    assert "Traceback" not in result.output


def test_another_number_of_classes_keeps_a_fresh_classifier(tmp_path: Path) -> None:
    model = _model(head={"norm": "layernorm", "mlp_ratio": 2.0})
    path = save_weights(model, tmp_path / "tiny.safetensors")
    finetune = build_model(model.arch_config, num_classes=3)
    layout, skipped = load_weights(finetune, path)
    assert layout == "hvtnas" and skipped == ["head.fc.bias", "head.fc.weight"]
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(finetune.eval().forward_features(x), model.forward_features(x))
        assert finetune(x).shape == (1, 3)
    headless = build_model(model.arch_config, checkpoint=path, features_only=True)
    with torch.inference_mode():
        torch.testing.assert_close(headless(x)[-1], model.forward_features(x))


def test_train_starts_from_converted_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    arch = small_arch(["pooling"])
    source = build_model(arch, num_classes=5)  # another head: the digits' classifier starts fresh
    weights = save_weights(source, tmp_path / "start.pt.safetensors")
    converted = runner.invoke(
        app,
        [
            "convert",
            str(weights),
            "--model",
            str(_arch_file(tmp_path, arch)),
            "--out",
            str(tmp_path / "c.safetensors"),
            "--json",
        ],
    )
    assert converted.exit_code == 0, converted.output
    assert json.loads(converted.stdout)["layout"] == "hvtnas"
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "arch": arch,
                "data": {"name": "digits", "resolution": 8},
                "train": {"epochs": 1, "batch_size": 64, "augment": {"hflip": False}},
                "output_dir": "out",
            }
        )
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = runner.invoke(
            app,
            ["train", str(config), "--json", "--no-progress", "--weights", str(tmp_path / "c.safetensors")],
        )
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["init_weights"]["layout"] == "hvtnas"


def _arch_file(tmp_path: Path, arch: dict) -> Path:
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump({**arch, "input": {**arch["input"], "num_classes": 5}}))
    return path


@needs_timm
def test_timm_weights_give_timm_logits(tmp_path: Path) -> None:
    """timm's weights file (as timm saves it) -> zoo model -> the logits of timm's model."""
    torch.manual_seed(0)
    reference = timm.create_model("pvt_v2_b0").eval()
    from safetensors.torch import save_file

    save_file(reference.state_dict(), str(tmp_path / "model.safetensors"))  # keys sorted in the file
    model = build_model("pvt_v2_b0", checkpoint=tmp_path / "model.safetensors").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


@needs_timm
def test_official_swin_checkpoint_gives_timm_logits(tmp_path: Path) -> None:
    """microsoft/Swin-Transformer's layout (patch merging at the end of the stage, ``head.weight``,
    attention masks saved) in a ``{"model": ...}`` torch file."""
    torch.manual_seed(0)
    reference = timm.create_model("swin_tiny_patch4_window7_224").eval()
    official = {}
    for key, value in reference.state_dict().items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        official[key.replace("head.fc.", "head.")] = value
    official["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    torch.save({"model": official}, tmp_path / "swin_tiny_patch4_window7_224.pth")
    result = runner.invoke(
        app,
        [
            "convert",
            str(tmp_path / "swin_tiny_patch4_window7_224.pth"),
            "-m",
            "swin_t",
            "--out",
            str(tmp_path / "s.safetensors"),
        ],
    )
    assert result.exit_code == 0 and "official-swin layout" in result.output, result.output
    model = build_model("swin_t", checkpoint=tmp_path / "s.safetensors").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


# Key names of the official code (microsoft/CvT lib/models/cls_cvt.py, whai362/PVT
# classification/pvt.py), written from hvtnas's by hand: converting them back must give the model's
# own state. With these layouts hvtnas's cvt_13 and pvt_tiny gave the official models' logits to
# 1.5e-6 (checked locally on the official code, which is no test dependency).
def _official_cvt_name(key: str) -> str:
    key = (
        key.replace("stem.", "stage0.patch_embed.")
        .replace("head.norm.", "norm.")
        .replace("head.fc.", "head.")
    )
    key = re.sub(r"stages\.(\d)\.downsample\.conv\.", r"stage\1.patch_embed.proj.", key)
    key = re.sub(r"stages\.(\d)\.downsample\.post_norm\.", r"stage\1.patch_embed.norm.", key)
    key = re.sub(r"stages\.(\d)\.tokens\.tokens", r"stage\1.cls_token", key)
    key = re.sub(r"mixer\.conv_([qkv])\.0\.", r"attn.conv_proj_\1.conv.", key)
    key = re.sub(r"mixer\.conv_([qkv])\.1\.", r"attn.conv_proj_\1.bn.", key)
    key = re.sub(r"stages\.(\d)\.blocks\.", r"stage\1.blocks.", key)
    return key.replace(".mixer.", ".attn.").replace(".ffn.", ".mlp.")


def _official_pvt_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.endswith("pos_embed.pos_embed"):
            i = int(key.split(".")[1])
            grid = value.flatten(1, 2)  # (1, H*W, C)
            prefix = state.get(f"stages.{i}.tokens.pos_embed")
            out[f"pos_embed{i + 1}"] = grid if prefix is None else torch.cat([prefix, grid], dim=1)
            continue
        if key.endswith("tokens.pos_embed"):
            continue
        key = (
            key.replace("stem.", "patch_embed1.").replace("head.norm.", "norm.").replace("head.fc.", "head.")
        )
        key = key.replace("stages.3.tokens.tokens", "cls_token")
        key = re.sub(r"stages\.(\d)\.downsample\.conv\.", lambda m: f"patch_embed{int(m[1]) + 1}.proj.", key)
        key = re.sub(
            r"stages\.(\d)\.downsample\.post_norm\.", lambda m: f"patch_embed{int(m[1]) + 1}.norm.", key
        )
        key = re.sub(r"stages\.(\d)\.blocks\.", lambda m: f"block{int(m[1]) + 1}.", key)
        out[key.replace(".mixer.", ".attn.").replace(".ffn.", ".mlp.")] = value
    return out


def _official_vil_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """microsoft/vision-longformer's MsViT names: ``layer<i>.0`` the patch embedding with the global
    token, its position entry and the axial embedding ((1, n, C/2) tables), then each block as two
    sub-blocks (attention ``2j + 1``, MLP ``2j + 2``); the global tokens' projections are saved a
    second time under ``*_global`` (shared modules), and a stage without global tokens saves an
    empty position entry."""
    out = {}
    for key, value in state.items():
        key = key.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        key = key.replace("stem.proj.", "layer1.0.proj.").replace("stem.norm.", "layer1.0.norm_embed.")
        key = re.sub(r"stages\.(\d)\.downsample\.conv\.", lambda m: f"layer{int(m[1]) + 1}.0.proj.", key)
        key = re.sub(
            r"stages\.(\d)\.downsample\.post_norm\.", lambda m: f"layer{int(m[1]) + 1}.0.norm_embed.", key
        )
        key = re.sub(r"stages\.(\d)\.tokens\.tokens", lambda m: f"layer{int(m[1]) + 1}.0.cls_token", key)
        key = re.sub(
            r"stages\.(\d)\.tokens\.pos_embed", lambda m: f"layer{int(m[1]) + 1}.0.cls_pos_embed", key
        )
        if ".pos_embed." in key:
            value = value[None]  # (1, n, C/2)
        key = re.sub(
            r"stages\.(\d)\.pos_embed\.row_embed", lambda m: f"layer{int(m[1]) + 1}.0.x_pos_embed", key
        )
        key = re.sub(
            r"stages\.(\d)\.pos_embed\.col_embed", lambda m: f"layer{int(m[1]) + 1}.0.y_pos_embed", key
        )
        block = re.match(r"stages\.(\d)\.blocks\.(\d+)\.(norm1|mixer|norm2|ffn)\.(.*)", key)
        if block:
            i, j, part, rest = int(block[1]), int(block[2]), block[3], block[4]
            sub = 2 * j + (1 if part in ("norm1", "mixer") else 2)
            name = {"norm1": "norm", "norm2": "norm", "mixer": "attn", "ffn": "mlp"}[part]
            key = f"layer{i + 1}.{sub}.{name}.{rest.replace('q.', 'query.') if part == 'mixer' else rest}"
            if part == "mixer" and i < 2:  # the global branch of the Longformer attention
                out[re.sub(r"\.attn\.(query|kv|proj)\.", r".attn.\1_global.", key)] = value
        out[key] = value
    out["layer4.0.cls_pos_embed"] = torch.zeros(1, 0, 768)
    return out


def test_official_vil_checkpoint_loads(tmp_path: Path) -> None:
    with torch.device("meta"):
        meta = build_model("vil_s", init_weights=False)
    state = {k: torch.randn(v.shape) for k, v in meta.state_dict().items()}
    official = _official_vil_state(state)
    assert "layer1.1.attn.query_global.weight" in official and "layer2.4.mlp.fc2.bias" in official
    path = tmp_path / "vil_s.pth"
    torch.save(official, path)
    model = build_model("vil_s", init_weights=False)
    assert load_weights(model, path) == ("official-vil", [])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    # separate global projections (SHARE_W off) are no model of hvtnas's: refused, naming them
    official["layer1.1.attn.query_global.weight"] = torch.randn(96, 96)
    torch.save(official, path)
    with pytest.raises(WeightsError, match=r"query_global"):
        load_weights(build_model("vil_s", init_weights=False), path)


def _official_regionvit_state(state: dict[str, torch.Tensor], rel_pos: torch.Tensor) -> dict:
    """IBM/RegionViT's names and shapes: the stem a Sequential (convs 0, 3, 6; LayerNorm2d 1, 4 with
    (1, C, 1, 1) parameters), ``cls_token`` the regional patch embedding, ``layers.<i>.block.0`` the
    projection (saved twice: ``proj`` and ``proj_cls`` are one module), ``block.<j + 1>`` block j;
    every block's ``attn.rel_pos`` is ``rel_pos`` (heads, 169), which hvtnas gets in its own layout."""
    out = {}
    for key, value in state.items():
        if key.endswith("relative_position_bias_table"):
            value = rel_pos[: value.shape[1]]
        stem = re.match(r"stem\.(convs|norms)\.(\d)\.(\w+)", key)
        if stem:
            index = 3 * int(stem[2]) + (stem[1] == "norms")
            key = f"patch_embed.proj.{index}.{stem[3]}"
        key = key.replace("stages.0.tokens.proj.", "cls_token.proj.")
        down = re.match(r"stages\.(\d)\.downsample\.(pre_norm|conv)\.(\w+)", key)
        if down:
            for proj in ("proj", "proj_cls"):
                part = 0 if down[2] == "pre_norm" else 2
                out[f"layers.{down[1]}.block.0.{proj}.{part}.{down[3]}"] = value
            continue
        key = re.sub(r"stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"layers.{m[1]}.block.{int(m[2]) + 1}.", key)
        key = key.replace(".norm_tokens.", ".norm0.").replace(
            ".mixer.relative_position_bias_table", ".attn.rel_pos"
        )
        key = key.replace(".mixer.", ".attn.").replace(".ffn.", ".mlp.")
        key = key.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        out[key] = value
    for key in [
        k for k in out if re.match(r"(patch_embed\.proj\.[14]|layers\.\d\.block\.0\.proj\w*\.0)\.", k)
    ]:
        out[key] = out[key].reshape(1, -1, 1, 1)  # LayerNorm2d
    return out


def test_official_regionvit_checkpoint_loads_with_its_position_table(tmp_path: Path) -> None:
    """The official table is read at ``tmp[dy - y + 3, dx - x + 3]`` for query (y, x) and key
    (dy, dx) in a 7x7 window (a 13x13 grid of indices; Python's negative indices wrap): loaded,
    hvtnas's bias equals the official one for every query, key and head."""
    with torch.device("meta"):
        meta = build_model("regionvit_s", init_weights=False)
    state = {k: torch.randn(v.shape) for k, v in meta.state_dict().items()}
    rel_pos = torch.randn(24, 169)
    official = _official_regionvit_state(state, rel_pos)
    assert "layers.2.block.0.proj_cls.2.weight" in official and "layers.0.block.2.norm0.bias" in official
    path = tmp_path / "regionvit_s.pth"
    torch.save(official, path)
    model = build_model("regionvit_s", init_weights=False)
    assert load_weights(model, path) == ("official-regionvit", [])
    for key, value in model.state_dict().items():
        if not key.endswith("relative_position_bias_table"):
            torch.testing.assert_close(value, state[key].reshape(value.shape), msg=key)
    grid = torch.arange(169).reshape(13, 13)
    cells = [(y, x) for y in range(7) for x in range(7)]
    index = torch.tensor([[int(grid[ky - qy + 3, kx - qx + 3]) for ky, kx in cells] for qy, qx in cells])
    mixer = model.stages[3].blocks[1].mixer  # 24 heads
    torch.testing.assert_close(mixer.position_bias(7, 7, torch.device("cpu")), rel_pos[:, index])
    # a regional projection that is not the map's own is no RegionViT hvtnas builds: refused, named
    official["layers.1.block.0.proj_cls.2.weight"] = torch.randn(192, 1, 3, 3)
    torch.save(official, path)
    with pytest.raises(WeightsError, match=r"proj_cls"):
        load_weights(build_model("regionvit_s", init_weights=False), path)


@pytest.mark.parametrize("name", ["cvt_13", "pvt_tiny"])
def test_official_class_token_checkpoints_load(name: str, tmp_path: Path) -> None:
    source = build_model(name)
    state = source.state_dict()
    if name == "cvt_13":
        official = {_official_cvt_name(k): v for k, v in state.items()}
    else:
        official = _official_pvt_state(state)
    assert "cls_token" in "".join(official)
    path = tmp_path / f"{name}.pth"
    torch.save(official, path)
    model = build_model(name)
    layout, _ = load_weights(model, path)
    assert layout == f"official-{name.split('_')[0]}"
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
