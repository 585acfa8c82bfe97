"""Tokens beside the map (hvtnas.models.tokens): config, the block on [tokens; map], the classifier
reading the class token, the timm API keeping maps, FLOPs and the mixers' token contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hvtnas import MIXERS, build_model
from hvtnas.config import ArchConfig
from hvtnas.costs import count_flops
from hvtnas.costs.flops import analyse
from hvtnas.errors import ConfigError, HvtnasError
from hvtnas.models.tokens import TOKEN_STREAMS, CarriedTokens, ClassTokens
from hvtnas.summary import count_params
from tests.conftest import tiny_config

CLASS_TOKEN = {"tokens": {"kind": "class", "from_stage": 2}}


def _class_token_model(mixers: list | None = None, **overrides: object) -> torch.nn.Module:
    return build_model(tiny_config(mixers or ["attention"], **{**CLASS_TOKEN, **overrides}))


# ----------------------------------------------------------------------------- config
def test_tokens_round_trip_through_yaml() -> None:
    cfg = ArchConfig.from_dict(
        tiny_config(["attention"], tokens={"kind": "global", "count": 4, "each_stage": "new"})
    )
    again = ArchConfig.from_yaml_text(cfg.to_yaml())
    assert again == cfg and again.tokens.count == 4 and again.tokens.each_stage == "new"
    assert ArchConfig.from_dict(tiny_config(["attention"], tokens="class")).tokens.from_stage == 0
    assert ArchConfig.from_dict(tiny_config(["attention"])).tokens is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tokens": {"kind": "cls"}}, "tokens: unknown token stream 'cls'; known: class, global, regional"),
        ({"tokens": {"kind": "class", "count": 0}}, "tokens.count: Input should be greater than 0"),
        ({"tokens": {"kind": "class", "from_stage": 4}}, "tokens.from_stage: is not a stage index"),
        ({"tokens": {"kind": "class", "window": 2}}, "tokens.window: unknown key"),
        (
            {"tokens": {"kind": "class", "from_stage": 3}, "stage": {"norm": "batchnorm"}},
            "stages[3].norm.kind: a stage that carries tokens normalises each token as a 1x1 map",
        ),
        (
            {"tokens": {"kind": "class", "pos_embed": True}},
            "tokens.pos_embed: the tokens' position-embedding entries need a learned (absolute or axial)",
        ),
        (
            {"tokens": {"kind": "global", "from_stage": 2, "last_stage": 1}},
            "tokens.last_stage: must be a stage index from from_stage (2) to 3",
        ),
        (
            {"tokens": {"kind": "class", "last_stage": 2}},
            "tokens.last_stage: the classifier reads the 'class' token, so the last stage (3) must carry it",
        ),
        (
            {"tokens": {"kind": "global", "last_stage": 4}},
            "tokens.last_stage: must be a stage index from from_stage (0) to 3",
        ),
    ],
)
def test_token_config_errors_name_the_field(overrides: dict, message: str) -> None:
    stage = overrides.pop("stage", {})
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict(tiny_config(["attention"], stage=stage, **overrides))
    assert message in str(err.value)


def test_tokens_need_a_mixer_that_attends_to_them() -> None:
    with pytest.raises(ConfigError, match=r"no mixer of the stages that carry them .* attends to tokens"):
        ArchConfig.from_dict(tiny_config(["pooling"], tokens="class"))
    ArchConfig.from_dict(tiny_config(["pooling", "attention"], tokens="class"))  # one of them does


def test_position_entries_need_an_absolute_embedding_where_the_tokens_are_made() -> None:
    tokens = {"kind": "class", "from_stage": 3, "pos_embed": True}
    with pytest.raises(ConfigError, match=r"at stage 3 .*per_stage: true"):
        ArchConfig.from_dict(tiny_config(["attention"], tokens=tokens, pos_embed="absolute"))
    pe = {"kind": "absolute", "per_stage": True}
    model = build_model(tiny_config(["attention"], tokens=tokens, pos_embed=pe))
    assert model.stages[3].tokens.pos_embed.shape == (1, 1, 64)


# ----------------------------------------------------------------------------- structure
def test_streams_are_made_once_and_carried_or_made_fresh_at_each_stage() -> None:
    carried = build_model(tiny_config(["attention"], tokens={"kind": "class", "from_stage": 1}))
    assert carried.stages[0].tokens is None
    assert isinstance(carried.stages[1].tokens, ClassTokens)
    assert all(isinstance(s.tokens, CarriedTokens) for s in carried.stages[2:])
    # widths 32 -> 48 -> 64: the carried tokens go through a Linear at each width change
    assert carried.stages[2].tokens.proj.weight.shape == (48, 32)
    fresh = build_model(
        tiny_config(["attention"], tokens={"kind": "global", "count": 2, "each_stage": "new"})
    )
    assert [s.tokens.tokens.shape for s in fresh.stages] == [(1, 2, w) for w in (16, 32, 48, 64)]
    without = count_params(build_model(tiny_config(["attention"])))
    assert count_params(fresh) == without + 2 * (16 + 32 + 48 + 64)
    assert count_params(carried) == without + 32 + (32 * 48 + 48) + (48 * 64 + 64)


def test_tokens_end_at_their_last_stage() -> None:
    """Vision Longformer: fresh global tokens in stages 1-3, none in stage 4 (whose map the
    classifier averages)."""
    tokens = {"kind": "global", "each_stage": "new", "last_stage": 2}
    model = build_model(tiny_config(["attention"], tokens=tokens))
    assert [s.tokens is None for s in model.stages] == [False, False, False, True]
    levels = model.forward_intermediates(
        torch.randn(1, 3, 32, 32), return_prefix_tokens=True, intermediates_only=True
    )
    assert [t is None for _, t in levels] == [False, False, False, True]
    assert count_params(model) == count_params(build_model(tiny_config(["attention"]))) + 16 + 32 + 48
    assert ArchConfig.from_yaml_text(model.arch_config.to_yaml()).tokens.last_stage == 2
    # a feature pyramid of the first two stages describes itself with a valid config
    pyramid = build_model(tiny_config(["attention"], tokens=tokens), features_only=True, out_indices=[0, 1])
    assert ArchConfig.from_yaml_text(pyramid.arch_config.to_yaml()).tokens.last_stage is None
    pvt = build_model("pvt_tiny", features_only=True, out_indices=[0, 1], init_weights=False)
    assert (
        ArchConfig.from_yaml_text(pvt.arch_config.to_yaml()).tokens is None
    )  # its class token began in stage 4


def test_axial_position_entries_of_fresh_tokens_at_every_stage() -> None:
    tokens = {"kind": "global", "each_stage": "new", "pos_embed": True}
    with pytest.raises(ConfigError, match=r"at stage 1 .*per_stage: true"):
        ArchConfig.from_dict(tiny_config(["attention"], tokens=tokens, pos_embed="axial"))
    model = build_model(
        tiny_config(["attention"], tokens=tokens, pos_embed={"kind": "axial", "per_stage": True})
    )
    assert [s.tokens.pos_embed.shape for s in model.stages] == [(1, 1, w) for w in (16, 32, 48, 64)]


def test_the_registry_holds_the_kinds() -> None:
    assert TOKEN_STREAMS.names() == ["class", "global", "regional"]
    assert TOKEN_STREAMS.get("class").read_by_head and not TOKEN_STREAMS.get("global").read_by_head


# ----------------------------------------------------------------------------- semantics
def _vit_block_reference(block: torch.nn.Module, sequence: torch.Tensor) -> torch.Tensor:
    """A pre-norm ViT block on the sequence ``[tokens; pixels]``, written from its definition."""
    mixer = block.mixer
    B, L, C = sequence.shape
    heads = mixer.num_heads
    q, k, v = mixer.qkv(block.norm1(sequence)).view(B, L, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1) / (C // heads) ** 0.5).softmax(-1)
    sequence = sequence + mixer.proj((attn @ v).transpose(1, 2).reshape(B, L, C))
    return sequence + block.ffn(block.norm2(sequence))


def test_a_block_on_tokens_and_map_is_the_sequence_models_block() -> None:
    block = _class_token_model().stages[2].blocks[0].eval()
    x, tokens = torch.randn(2, 3, 5, 48), torch.randn(2, 2, 48)
    out, out_tokens = block.forward_with_tokens(x, tokens)
    expected = _vit_block_reference(block, torch.cat([tokens, x.flatten(1, 2)], dim=1))
    torch.testing.assert_close(out_tokens, expected[:, :2])
    torch.testing.assert_close(out, expected[:, 2:].reshape(2, 3, 5, 48))


def test_tokens_pass_a_mixer_that_does_not_attend_to_them() -> None:
    block = build_model(tiny_config(["pooling", "attention"], tokens="class")).stages[0].blocks[0].eval()
    x, tokens = torch.randn(1, 4, 4, 16), torch.randn(1, 1, 16)
    out, out_tokens = block.forward_with_tokens(x, tokens)
    torch.testing.assert_close(out, block(x))  # the map's block is unchanged by the tokens
    torch.testing.assert_close(out_tokens, tokens + block.ffn(block.norm2(tokens)))  # only the FFN


def test_the_head_reads_the_class_token() -> None:
    model = _class_token_model().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        features, tokens = model.forward_features(x, return_tokens=True)
        assert features.shape == (2, 64, 1, 1) and tokens.shape == (2, 1, 64)
        expected = model.head.fc(model.head.norm(tokens[:, 0]))
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model.forward_head(features, tokens=tokens), expected)
        pooled = model.forward_head(features, pre_logits=True, tokens=tokens)
        torch.testing.assert_close(pooled, model.head.norm(tokens[:, 0]))
    with pytest.raises(HvtnasError, match="classifies from its class token"):
        model.forward_head(features)


def test_the_class_token_sees_the_image() -> None:
    model = _class_token_model().eval()
    a, b = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    assert not torch.allclose(model(a), model(b))


def test_maps_stay_maps_and_tokens_come_on_request() -> None:
    model = _class_token_model().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        pyramid = model.forward_intermediates(x, intermediates_only=True)
        assert [tuple(p.shape) for p in pyramid] == [
            (1, 16, 16, 16),
            (1, 32, 8, 8),
            (1, 48, 4, 4),
            (1, 64, 2, 2),
        ]
        with_tokens = model.forward_intermediates(x, intermediates_only=True, return_prefix_tokens=True)
        assert [t is None for _, t in with_tokens] == [True, True, False, False]
        torch.testing.assert_close(with_tokens[3][1], model.forward_features(x, return_tokens=True)[1])
        backbone = build_model(tiny_config(["attention"], **CLASS_TOKEN), features_only=True)
        backbone.load_state_dict(model.state_dict(), strict=False)
        assert all(m.dim() == 4 for m in backbone(x))


def test_the_kind_decides_what_the_classifier_reads() -> None:
    assert _class_token_model().head.pool == "token"
    x = torch.randn(1, 3, 32, 32)
    global_tokens = build_model(tiny_config(["attention"], tokens="global")).eval()
    assert global_tokens.head.pool == "avg"
    torch.testing.assert_close(
        global_tokens.forward_head(global_tokens.forward_features(x)), global_tokens(x)
    )


def test_reset_classifier_keeps_the_pooling_the_config_gives() -> None:
    model = _class_token_model().eval()
    model.reset_classifier(5, global_pool="token")
    features, tokens = model.forward_features(torch.randn(1, 3, 32, 32), return_tokens=True)
    assert model.forward_head(features, tokens=tokens).shape == (1, 5)
    with pytest.raises(HvtnasError, match="this model pools by 'token', not 'avg'"):
        model.reset_classifier(5, global_pool="avg")
    with pytest.raises(HvtnasError, match="this model pools by 'avg', not 'token'"):
        build_model(tiny_config(["attention"])).reset_classifier(5, global_pool="token")


def test_norms_and_ffns_see_each_token_as_a_1x1_map() -> None:
    """GroupNorm and Mix-FFN (made for maps) on tokens: with a mixer the tokens pass (pooling, which
    gives 0 on a 1x1 map), the tokens' block is the map block on each token as a 1x1 map."""
    stage = {"norm": "groupnorm", "ffn": "mixffn"}
    model = build_model(tiny_config(["pooling", "attention"], tokens="class", stage=stage))
    block = model.stages[0].blocks[0].eval()
    x, tokens = torch.randn(2, 4, 4, 16), torch.randn(2, 3, 16)
    _, out_tokens = block.forward_with_tokens(x, tokens)
    as_maps = tokens.reshape(6, 1, 1, 16)
    torch.testing.assert_close(out_tokens, block(as_maps).reshape(2, 3, 16))
    # the 1x1 map's GroupNorm is a per-token normalisation over the channels
    norm = block.norm2
    expected = F.layer_norm(tokens, (16,), norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(norm(as_maps).reshape(2, 3, 16), expected)


def test_gradients_reach_the_tokens_and_checkpointing_keeps_them() -> None:
    cfg = tiny_config(["attention"], drop_path_rate=0.3, stage={"depth": 2}, **CLASS_TOKEN)
    x = torch.randn(4, 3, 32, 32)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg).train()
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(1)  # the same drop-path draws in both runs
        model(x).logsumexp(dim=1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0]["stages.2.tokens.tokens"].abs().sum() > 0
    assert set(grads[0]) == set(grads[1])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_drop_path_drops_a_samples_tokens_with_its_map() -> None:
    block = build_model(tiny_config(["attention"], tokens="class", drop_path_rate=0.99, stage={"depth": 2}))
    block = block.stages[3].blocks[1].train()
    x, tokens = torch.randn(64, 2, 2, 64), torch.randn(64, 1, 64)
    out, out_tokens = block.forward_with_tokens(x, tokens)
    map_kept = (out - x).flatten(1).abs().sum(1) > 0
    tokens_kept = (out_tokens - tokens).flatten(1).abs().sum(1) > 0
    assert torch.equal(map_kept, tokens_kept) and not map_kept.all()


# ----------------------------------------------------------------------------- costs
@pytest.mark.parametrize(
    "tokens",
    [{"kind": "class", "from_stage": 2}, {"kind": "global", "count": 3, "each_stage": "new"}],
)
def test_fast_flop_count_equals_fvcore_with_tokens(tokens: dict) -> None:
    model = build_model(tiny_config(["attention", "spatial_reduction"], tokens=tokens))
    for backbone_only in (False, True):
        fast = count_flops(model, (64, 48), backbone_only=backbone_only)
        ref = count_flops(model, (64, 48), backbone_only=backbone_only, method="fvcore")
        assert fast.total == ref.total and fast.by_module == ref.by_module


def test_vision_longformer_stages_count_like_fvcore_and_their_closed_form() -> None:
    """Global tokens made fresh in stages 1-3 (none in 4) meeting the map through the sliding-chunk
    attention; the map sides at 64 x 48 (16 x 12, 8 x 6, ...) pad the 7 x 7 chunks."""
    tokens = {"kind": "global", "count": 2, "each_stage": "new", "last_stage": 2}
    model = build_model(tiny_config(["longformer"], tokens=tokens))
    for backbone_only in (False, True):
        fast = count_flops(model, (64, 48), backbone_only=backbone_only)
        ref = count_flops(model, (64, 48), backbone_only=backbone_only, method="fvcore")
        assert fast.total == ref.total and fast.by_module == ref.by_module

    C, T, H, W = 16, 2, 9, 12
    mixer = MIXERS.get("longformer")(C, num_heads=2).eval()

    class WithTokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mixer = mixer

        def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple:
            return self.mixer.forward_with_tokens(x, tokens)

    N, Np, K = H * W, 14 * 14, 9 * 49  # map padded to whole 7 x 7 chunks; keys of a chunk's neighbourhood
    analysis = analyse(WithTokens(), (torch.randn(1, H, W, C), torch.randn(1, T, C)))
    assert analysis.total() == (
        3 * (N + T) * C * C  # q, kv of the map and the tokens
        + 2 * Np * (T + K) * C  # every chunk's queries with the tokens and its neighbourhood
        + 2 * T * (T + N) * C  # every token with all tokens and the whole map
        + (N + T) * C * C  # output projection
    )


def test_attention_over_tokens_and_map_costs_its_closed_form() -> None:
    C, T, H, W = 16, 2, 5, 6
    L = T + H * W
    mixer = MIXERS.get("attention")(C, num_heads=2).eval()

    class WithTokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mixer = mixer

        def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple:
            return self.mixer.forward_with_tokens(x, tokens)

    analysis = analyse(WithTokens(), (torch.randn(1, H, W, C), torch.randn(1, T, C)))
    assert analysis.total() == 4 * L * C * C + 2 * L * L * C  # qkv + proj, Q K^T + A V


# ----------------------------------------------------------------------------- mixers
ATTENDING = [k for k in MIXERS.names() if MIXERS.get(k).attends_tokens]


def test_the_mixers_that_attend_to_tokens() -> None:
    assert ATTENDING == [
        "attention",
        "conv_projection",
        "factorized",
        "longformer",
        "pooled_reduction",
        "pooling_attention",
        "regional_local",
        "spatial_reduction",
    ]


# tokens beside a 9 x 11 map: three, or one per window where a mixer needs that (regional_local:
# 2 x 2 windows of 7)
TOKENS_BESIDE_THE_MAP = {"regional_local": 4}


@pytest.mark.parametrize("kind", ATTENDING)
def test_every_attending_mixer_mixes_tokens_and_map_both_ways(kind: str) -> None:
    cls = MIXERS.get(kind)
    kwargs = cls.Params(kind=kind).model_dump(exclude={"kind"})
    if cls.uses_map_size:
        kwargs["map_size"] = 9
    mixer = cls(16, num_heads=2, **kwargs).double().eval()
    x = torch.randn(1, 9, 11, 16, dtype=torch.float64, requires_grad=True)
    count = TOKENS_BESIDE_THE_MAP.get(kind, 3)
    tokens = torch.randn(1, count, 16, dtype=torch.float64, requires_grad=True)
    out, out_tokens = mixer.forward_with_tokens(x, tokens)
    assert out.shape == x.shape and out_tokens.shape == tokens.shape
    (grad_x,) = torch.autograd.grad(out_tokens.sum(), x, retain_graph=True)
    (grad_tokens,) = torch.autograd.grad(out[0, 4, 5].sum(), tokens)
    assert grad_x.abs().sum() > 0 and grad_tokens.abs().sum() > 0  # the tokens see the map, and back


def test_the_one_line_description_names_the_tokens_and_the_patch_size() -> None:
    from hvtnas.models import zoo
    from hvtnas.summary import describe

    assert describe(zoo.get_config("deit_s")) == "patch16 stem, absolute PE: 12x384 attention, 1 class token"
    line = describe(ArchConfig.from_dict(tiny_config(["attention"], tokens={"kind": "global", "count": 2})))
    assert line.endswith("1x16 attention, 2 global tokens | 1x32 attention | 1x48 attention | 1x64 attention")
    assert describe(zoo.get_config("vil_s")) == (
        "patch stem, axial PE: 1x96 longformer, 1 global token | 2x192 longformer, 1 global token | "
        "8x384 attention, 1 global token | 1x768 attention"
    )


def test_the_sequence_form_and_the_split_form_of_a_block_agree() -> None:
    """A stage whose blocks all take [tokens; pixels] as one sequence keeps it joined (ViT's form);
    the per-block split form, used otherwise, computes the same."""
    stage = _class_token_model(["attention", "spatial_reduction"], stage={"depth": 2}).stages[2].eval()
    assert all(block.takes_sequence for block in stage.blocks)
    x = torch.randn(2, 6, 10, 32)  # the previous stage's map
    with torch.inference_mode():
        joined_map, joined_tokens = stage(x)
        split_map = stage.pos_embed(stage.downsample(x))
        split_tokens = stage.tokens(split_map, None)
        for block in stage.blocks:
            split_map, split_tokens = block.forward_with_tokens(split_map, split_tokens)
    torch.testing.assert_close(joined_map, split_map)
    torch.testing.assert_close(joined_tokens, split_tokens)
    # a norm that is not per token (GroupNorm over the map) keeps the split form
    grouped = _class_token_model(stage={"norm": "groupnorm"}).stages[2]
    assert not any(block.takes_sequence for block in grouped.blocks)
