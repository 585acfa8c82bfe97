"""The contract every registered token mixer must meet, plus checks of each mixer's own semantics."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from hvtnas import MIXERS, build_model
from hvtnas.models.mixers.attention import (
    CosineWindowAttention,
    DilatedWindowAttention,
    RelativeAttention,
    ShiftedWindowAttention,
    SpatialReductionAttention,
    WindowAttention,
)
from hvtnas.models.mixers.conv_attention import (
    ConvProjectionAttention,
    ConvSelfAttention,
    EfficientMultiHeadAttention,
    FactorizedAttention,
    RecursiveAtrousAttention,
    split_heads,
)
from hvtnas.models.mixers.cross_window import CrossShapedWindowAttention
from hvtnas.models.mixers.focal import FocalAttention
from hvtnas.models.mixers.halo import HaloAttention
from hvtnas.models.mixers.longformer import LongformerAttention
from hvtnas.models.mixers.mlp import AxialShift, RandomMixing, SpatialShift, TokenMLP
from hvtnas.models.mixers.pooling import Pooling
from hvtnas.models.mixers.pooling_attention import PoolingAttention
from hvtnas.models.mixers.separable import SeparableWindowAttention
from hvtnas.models.mixers.shift import Shift
from hvtnas.models.mixers.shunted import ShuntedAttention
from hvtnas.summary import count_params
from tests.conftest import tiny_config


def _mixer_pattern(kind: str) -> list:
    # MBConv blocks have no FFN (CoAtNet): give the stage ffn "none" and a BatchNorm pre-norm
    return [{"kind": kind}]


@pytest.mark.parametrize("resolution", [32, 96])
@pytest.mark.parametrize("kind", MIXERS.names())
def test_every_mixer_forward_backward(kind: str, resolution: int) -> None:
    stage = {"ffn": "none", "norm": "batchnorm"} if kind == "mbconv" else {}
    cfg = tiny_config(_mixer_pattern(kind), stage=stage)
    model = build_model(cfg)
    x = torch.randn(2, 3, resolution, resolution)
    with torch.inference_mode():  # anything cached here must still work for training below
        model.eval()(x)
    model.train()
    pyramid = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(f.shape) for f in pyramid] == [
        (2, w, -(-resolution // s), -(-resolution // s))
        for w, s in zip([16, 32, 48, 64], [4, 8, 16, 32], strict=True)
    ]
    logits = model(x)
    assert logits.shape == (2, 10)
    assert all(torch.isfinite(f).all() for f in pyramid) and torch.isfinite(logits).all()
    (logits.square().mean() + sum(f.mean() for f in pyramid)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{kind}: no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), f"{kind}: non-finite gradient in {name}"
    if resolution > 32:  # at 32 the last map is 1x1, where attention weights carry no gradient
        zero = [n for n, p in model.named_parameters() if ".mixer." in n and not p.grad.abs().sum() > 0]
        assert not zero, f"{kind}: all-zero gradient in {zero}"


@pytest.mark.parametrize("kind", MIXERS.names())
def test_every_mixer_declares_its_contract(kind: str) -> None:
    cls = MIXERS.get(kind)
    params = cls.Params(kind=kind)  # defaults must be valid
    kwargs = params.model_dump(exclude={"kind"})
    if cls.uses_heads:
        kwargs["num_heads"] = 2
    if cls.uses_map_size:
        kwargs["map_size"] = 16  # built for a 16x16 map, run on another: tables must adapt
    mixer = cls(16, **kwargs)
    x = torch.randn(1, 9, 11, 16)  # odd, non-square map
    assert mixer(x).shape == x.shape
    if cls.flop_free:
        assert sum(p.numel() for p in mixer.parameters()) == 0


# ----------------------------------------------------------------------------- window attention masks
def _brute_force_allowed(H: int, W: int, mixer: WindowAttention) -> torch.Tensor:
    """(nW, N, N) True where a query may attend a key, from first principles: same window of the
    rolled map, no wrap-around between them in the original image, and a real query never
    attends padding."""
    wh, ww, sh, sw = mixer.geometry(H, W)
    Hp, Wp = H + (-H) % wh, W + (-W) % ww
    windows = []
    for wr, wc in itertools.product(range(Hp // wh), range(Wp // ww)):
        cells = [(wr * wh + i, wc * ww + j) for i in range(wh) for j in range(ww)]
        orig = [((r + sh) % Hp, (c + sw) % Wp) for r, c in cells]
        pad = [r >= H or c >= W for r, c in orig]
        allowed = torch.zeros(len(cells), len(cells), dtype=torch.bool)
        for q, k in itertools.product(range(len(cells)), repeat=2):
            close = abs(orig[q][0] - orig[k][0]) < wh and abs(orig[q][1] - orig[k][1]) < ww
            allowed[q, k] = close and (pad[q] or not pad[k])
        windows.append(allowed)
    return torch.stack(windows)


@pytest.mark.parametrize("size", [(14, 14), (16, 16), (21, 28), (9, 23), (56, 56), (7, 7), (8, 20), (3, 5)])
@pytest.mark.parametrize("cls", [WindowAttention, ShiftedWindowAttention])
def test_window_mask_matches_brute_force(cls: type, size: tuple[int, int]) -> None:
    mixer = cls(8, num_heads=2, window_size=7)
    H, W = size
    blocked = mixer.blocked_mask(H, W)
    expected = _brute_force_allowed(H, W, mixer)
    got = ~blocked if blocked is not None else torch.ones_like(expected)
    assert torch.equal(got, expected)


def test_shift_is_disabled_when_the_map_fits_one_window() -> None:
    mixer = ShiftedWindowAttention(8, num_heads=2, window_size=7)
    assert mixer.geometry(7, 7) == (7, 7, 0, 0)
    assert mixer.geometry(4, 20) == (4, 7, 0, 3)
    assert mixer.geometry(56, 56) == (7, 7, 3, 3)


@pytest.mark.parametrize("size", [(14, 14), (16, 12)])
def test_shifted_window_output_depends_only_on_its_region(size: tuple[int, int]) -> None:
    """End to end through roll, padding and un-roll: the output at a token has a gradient w.r.t.
    exactly the input tokens that the brute-force rule lets it attend."""
    H, W = size
    mixer = ShiftedWindowAttention(8, num_heads=2, window_size=7).double()
    wh, ww, sh, sw = mixer.geometry(H, W)
    Hp, Wp = H + (-H) % wh, W + (-W) % ww
    allowed = _brute_force_allowed(H, W, mixer)
    for qi, qj in [(0, 0), (H - 1, W - 1), (H // 2, 1), (2, W - 2)]:
        x = torch.randn(1, H, W, 8, dtype=torch.float64, requires_grad=True)
        mixer(x)[0, qi, qj].sum().backward()
        touched = x.grad[0].abs().sum(-1) > 0
        # the same set from the brute-force rule, mapped back to original coordinates
        r, c = (qi - sh) % Hp, (qj - sw) % Wp
        win = (r // wh) * (Wp // ww) + c // ww
        q = (r % wh) * ww + c % ww
        expected = torch.zeros(H, W, dtype=torch.bool)
        for k in range(wh * ww):
            kr, kc = (r // wh) * wh + k // ww, (c // ww) * ww + k % ww
            orow, ocol = (kr + sh) % Hp, (kc + sw) % Wp
            if allowed[win, q, k] and orow < H and ocol < W:
                expected[orow, ocol] = True
        assert torch.equal(touched, expected), (qi, qj)


def test_window_attention_equals_global_attention_on_one_window() -> None:
    """With one window covering the map and no relative bias, window attention is plain MHSA."""
    mixer = WindowAttention(16, num_heads=4, window_size=7, relative_position_bias=False)
    x = torch.randn(2, 7, 7, 16)
    q, k, v = mixer.qkv(x.flatten(1, 2)).view(2, 49, 3, 4, 4).permute(2, 0, 3, 1, 4)
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 7, 7, 16)
    torch.testing.assert_close(mixer(x), mixer.proj(ref))


def test_spatial_reduction_shrinks_keys_and_pads_odd_maps() -> None:
    mixer = SpatialReductionAttention(16, num_heads=2, sr_ratio=4)
    assert mixer.reduce(torch.randn(1, 16, 16, 16)).shape == (1, 4, 4, 16)
    assert mixer.reduce(torch.randn(1, 7, 9, 16)).shape == (1, 2, 3, 16)
    assert mixer(torch.randn(1, 7, 9, 16)).shape == (1, 7, 9, 16)


def test_pooling_is_average_minus_identity() -> None:
    x = torch.randn(2, 6, 5, 4)
    nchw = x.permute(0, 3, 1, 2)
    expected = F.avg_pool2d(nchw, 3, 1, 1, count_include_pad=False) - nchw
    torch.testing.assert_close(Pooling(4)(x), expected.permute(0, 2, 3, 1))


def test_shift_moves_four_channel_groups_one_pixel() -> None:
    C = 24  # n_div 12: groups of 2 channels
    x = torch.randn(1, 5, 6, C)
    out = Shift(C, n_div=12)(x)
    g = 2
    expected = torch.zeros_like(x)
    for i, j in itertools.product(range(5), range(6)):
        if j + 1 < 6:
            expected[0, i, j, 0:g] = x[0, i, j + 1, 0:g]  # left: takes the right neighbour
        if j - 1 >= 0:
            expected[0, i, j, g : 2 * g] = x[0, i, j - 1, g : 2 * g]
        if i + 1 < 5:
            expected[0, i, j, 2 * g : 3 * g] = x[0, i + 1, j, 2 * g : 3 * g]  # up
        if i - 1 >= 0:
            expected[0, i, j, 3 * g : 4 * g] = x[0, i - 1, j, 3 * g : 4 * g]
    expected[..., 4 * g :] = x[..., 4 * g :]
    torch.testing.assert_close(out, expected)


# ----------------------------------------------------------------------------- receptive fields
def _touched(mixer: torch.nn.Module, H: int, W: int, at: tuple[int, int], dim: int = 8) -> torch.Tensor:
    """(H, W) True where an input token has a gradient w.r.t. the output token ``at``."""
    x = torch.randn(1, H, W, dim, dtype=torch.float64, requires_grad=True)
    mixer.double()(x)[0, at[0], at[1]].sum().backward()
    return x.grad[0].abs().sum(-1) > 0


def test_cross_shaped_window_sees_its_row_and_column_stripes() -> None:
    mixer = CrossShapedWindowAttention(8, num_heads=2, stripe_width=2)
    H, W = 8, 10
    for r, c in [(0, 0), (5, 3), (7, 9)]:
        rows = torch.arange(H)[:, None].expand(H, W) // 2 == r // 2  # horizontal stripe, full width
        cols = torch.arange(W)[None, :].expand(H, W) // 2 == c // 2  # vertical stripe, full height
        assert torch.equal(_touched(mixer, H, W, (r, c)), rows | cols), (r, c)


def test_cross_shaped_window_covering_the_map_is_global_attention_plus_lepe() -> None:
    """CSWin's last stage: one stripe covers the map, so both halves attend every token."""
    mixer = CrossShapedWindowAttention(8, num_heads=2, stripe_width=7)
    x = torch.randn(2, 7, 7, 8)
    q, k, v = mixer.qkv(x).flatten(1, 2).chunk(3, dim=-1)  # (B, 49, 8) each
    halves = (slice(0, 4), slice(4, 8))  # vertical, horizontal branch: one head each
    heads = [F.scaled_dot_product_attention(q[..., s], k[..., s], v[..., s]) for s in halves]
    lepe = [
        conv(v[..., s].transpose(1, 2).reshape(2, 4, 7, 7)).flatten(2).transpose(1, 2)
        for conv, s in zip(mixer.lepe, halves, strict=True)
    ]
    expected = torch.cat([h + e for h, e in zip(heads, lepe, strict=True)], dim=-1)
    torch.testing.assert_close(mixer(x), mixer.proj(expected).view(2, 7, 7, 8))


def test_cross_shaped_window_needs_an_even_number_of_heads() -> None:
    with pytest.raises(ValueError, match="split heads in two"):
        CrossShapedWindowAttention(12, num_heads=3)


@pytest.mark.parametrize("size", [(12, 12), (10, 9)])
def test_halo_attention_sees_its_block_and_halo(size: tuple[int, int]) -> None:
    mixer = HaloAttention(8, num_heads=2, block_size=4, halo_size=1)
    H, W = size
    for r, c in [(0, 0), (5, 6), (H - 1, W - 1)]:
        r0, c0 = (r // 4) * 4, (c // 4) * 4
        rows = (torch.arange(H) >= r0 - 1) & (torch.arange(H) < r0 + 5)
        cols = (torch.arange(W) >= c0 - 1) & (torch.arange(W) < c0 + 5)
        assert torch.equal(_touched(mixer, H, W, (r, c)), rows[:, None] & cols[None, :]), (r, c)


def test_halo_covering_the_map_without_bias_is_global_attention() -> None:
    mixer = HaloAttention(8, num_heads=2, block_size=3, halo_size=3, relative_position_bias=False)
    x = torch.randn(2, 3, 3, 8)
    q = mixer.q(x).view(2, 9, 2, 4).transpose(1, 2)
    k, v = mixer.kv(x).view(2, 9, 2, 2, 4).permute(3, 0, 2, 1, 4)  # kv channels: (heads, [k, v], d)
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 3, 3, 8)
    torch.testing.assert_close(mixer(x), mixer.proj(ref))


def _longformer_reference(mixer: LongformerAttention, x: torch.Tensor, tokens: torch.Tensor) -> tuple:
    """Vision Longformer's attention written as dense attention over ``[tokens; pixels]`` with a
    mask: tokens see everything and are seen by every pixel; a pixel sees the pixels of its chunk's
    3 x 3 neighbourhood of chunks (chunks of w x w from the top-left corner)."""
    B, H, W, C = x.shape
    T, n, w = tokens.shape[1], mixer.num_heads, mixer.window_size
    sequence = torch.cat([tokens, x.flatten(1, 2)], dim=1)  # (B, T + H W, C)
    L = sequence.shape[1]
    q = mixer.q(sequence).view(B, L, n, C // n).transpose(1, 2)
    k, v = mixer.kv(sequence).view(B, L, 2, n, C // n).permute(2, 0, 3, 1, 4)
    chunk_row = torch.arange(H).repeat_interleave(W) // min(w, H)  # (H W,)
    chunk_col = torch.arange(W).repeat(H) // min(w, W)
    near = ((chunk_row[:, None] - chunk_row[None, :]).abs() <= 1) & (
        (chunk_col[:, None] - chunk_col[None, :]).abs() <= 1
    )
    allowed = torch.ones(L, L, dtype=torch.bool)
    allowed[T:, T:] = near
    logits = (q @ k.transpose(-2, -1) / (C // n) ** 0.5).masked_fill(~allowed, float("-inf"))
    out = mixer.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(B, L, C))
    return out[:, T:].reshape(B, H, W, C), out[:, :T]


@pytest.mark.parametrize("size", [(14, 14), (9, 16), (4, 11)])
def test_longformer_is_dense_attention_over_the_chunk_neighbourhood_and_the_tokens(
    size: tuple[int, int],
) -> None:
    """At 9 x 16 the chunks are padded (to 14 x 21), at 4 x 11 a chunk is 4 rows high."""
    mixer = LongformerAttention(8, num_heads=2, window_size=3 if size == (14, 14) else 4).double()
    x, tokens = torch.randn(2, *size, 8, dtype=torch.float64), torch.randn(2, 2, 8, dtype=torch.float64)
    out, out_tokens = mixer.forward_with_tokens(x, tokens)
    ref, ref_tokens = _longformer_reference(mixer, x, tokens)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out_tokens, ref_tokens)
    ref_alone, _ = _longformer_reference(mixer, x, tokens[:, :0])  # no tokens: local attention alone
    torch.testing.assert_close(mixer(x), ref_alone)


@pytest.mark.parametrize("size", [(8, 8), (9, 10)])
def test_dilated_window_groups_tokens_spaced_over_the_map(size: tuple[int, int]) -> None:
    mixer = DilatedWindowAttention(8, num_heads=2, window_size=4)
    H, W = size
    nh, nw = -(-H // 4), -(-W // 4)  # windows per axis = spacing of a window's tokens
    for r, c in [(0, 0), (3, 5), (H - 1, W - 1)]:
        expected = (torch.arange(H)[:, None] % nh == r % nh) & (torch.arange(W)[None, :] % nw == c % nw)
        assert torch.equal(_touched(mixer, H, W, (r, c)), expected), (r, c)


def test_token_mlp_mixes_within_its_window_only() -> None:
    mixer = TokenMLP(8, window_size=4)
    touched = _touched(mixer, 8, 6, (5, 1))
    expected = torch.zeros(8, 6, dtype=torch.bool)
    expected[4:8, 0:4] = True
    assert torch.equal(touched, expected)


def test_random_mixing_is_a_frozen_row_stochastic_matrix() -> None:
    mixer = RandomMixing(4, window_size=3)
    assert not list(mixer.parameters()) and mixer.random_matrix.shape == (9, 9)
    torch.testing.assert_close(mixer.random_matrix.sum(-1), torch.ones(9))
    x = torch.randn(2, 3, 3, 4)
    expected = torch.einsum("ij,bjc->bic", mixer.random_matrix, x.flatten(1, 2)).view(2, 3, 3, 4)
    torch.testing.assert_close(mixer(x), expected)
    assert "random_matrix" in mixer.state_dict()


def test_axial_shift_moves_channel_groups_like_as_mlp() -> None:
    """Against AS-MLP's own formulation: pad, roll each channel chunk by -2..2, crop."""
    mixer = AxialShift(12, shift_size=5)
    x = torch.randn(2, 6, 7, 12)

    def rolled(x: torch.Tensor, axis: int) -> torch.Tensor:
        padded = F.pad(x.permute(0, 3, 1, 2), (2, 2, 2, 2))
        chunks = torch.chunk(padded, 5, dim=1)  # 12 channels: 4 chunks of 3, shifted -2..1 (zip stops)
        out = torch.cat([torch.roll(c, s, axis) for c, s in zip(chunks, range(-2, 3), strict=False)], dim=1)
        return out[:, :, 2:-2, 2:-2].permute(0, 2, 3, 1)

    torch.testing.assert_close(mixer._shift(x, 2), rolled(x, 3))  # along W
    torch.testing.assert_close(mixer._shift(x, 1), rolled(x, 2))  # along H


@pytest.mark.parametrize("C", [8, 10])
def test_spatial_shift_moves_four_groups_one_pixel_like_s2_mlp(C: int) -> None:
    """S2-MLP's shift, element by element: groups split at C/4, C/2, 3C/4 move down, up, right,
    left; the first row or column a group leaves keeps its own values."""
    H, W = 4, 5
    x = torch.randn(2, H, W, C)
    bounds = [0, C // 4, C // 2, C * 3 // 4, C]
    moves = [(-1, 0), (1, 0), (0, -1), (0, 1)]  # where each group's output reads from
    expected = torch.empty_like(x)
    for (lo, hi), (dy, dx) in zip(itertools.pairwise(bounds), moves, strict=True):
        for i, j in itertools.product(range(H), range(W)):
            si, sj = i + dy, j + dx
            inside = 0 <= si < H and 0 <= sj < W
            expected[:, i, j, lo:hi] = x[:, si, sj, lo:hi] if inside else x[:, i, j, lo:hi]
    torch.testing.assert_close(SpatialShift.shift(x), expected)
    mixer = SpatialShift(C)
    torch.testing.assert_close(mixer(x), mixer.fc2(SpatialShift.shift(mixer.act(mixer.fc1(x)))))


def test_cosine_window_attention_logits() -> None:
    """Swin V2 on one window: softmax(cos(q, k) * min(exp(logit_scale), 100) + 16 sigmoid(cpb)) v."""
    mixer = CosineWindowAttention(8, num_heads=2, window_size=4)
    with torch.no_grad():
        mixer.logit_scale.fill_(5.0)  # above log(100): the clamp must act
        mixer.q_bias.normal_()
        mixer.v_bias.normal_()
    x = torch.randn(1, 4, 4, 8)
    bias = torch.cat([mixer.q_bias, torch.zeros(8), mixer.v_bias])
    q, k, v = F.linear(x.flatten(1, 2), mixer.qkv.weight, bias).view(1, 16, 3, 2, 4).permute(2, 0, 3, 1, 4)
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * 100.0
    logits = logits + mixer.position_bias(4, 4, x.device)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(1, 4, 4, 8)
    torch.testing.assert_close(mixer(x), mixer.proj(out))
    assert mixer.position_bias(4, 4, x.device).abs().max() <= 16


def test_conv_projection_attention_matches_cvt_formulation() -> None:
    mixer = ConvProjectionAttention(8, num_heads=2, kv_stride=2).eval()
    x = torch.randn(1, 6, 6, 8)
    nchw = x.permute(0, 3, 1, 2)

    def project(conv: torch.nn.Module, linear: torch.nn.Linear) -> torch.Tensor:
        return linear(conv(nchw).flatten(2).transpose(1, 2)).view(1, -1, 2, 4).transpose(1, 2)

    q = project(mixer.conv_q, mixer.proj_q)
    k = project(mixer.conv_k, mixer.proj_k)
    v = project(mixer.conv_v, mixer.proj_v)
    assert k.shape[2] == 9  # 6x6 keys subsampled to 3x3
    attn = (q @ k.transpose(-2, -1) * 8**-0.5).softmax(-1)  # CvT scales by width^-1/2
    out = (attn @ v).transpose(1, 2).reshape(1, 6, 6, 8)
    torch.testing.assert_close(mixer(x), mixer.proj(out))


def test_emsa_mixes_heads_only_when_there_are_several() -> None:
    assert EfficientMultiHeadAttention(8, num_heads=1, sr_ratio=2).head_transform is None
    mixer = EfficientMultiHeadAttention(8, num_heads=2, sr_ratio=2)
    assert mixer.sr.groups == 8 and mixer.sr.kernel_size == (3, 3) and mixer.sr.stride == (2, 2)
    assert mixer(torch.randn(2, 7, 5, 8)).shape == (2, 7, 5, 8)


def test_shunted_attention_uses_two_reduction_rates() -> None:
    mixer = ShuntedAttention(16, num_heads=4, sr_ratio=8)
    x = torch.randn(1, 16, 16, 16)
    coarse, fine = (reduction(x, 2)[0] for reduction in mixer.reductions)
    assert coarse.shape == (1, 2, 4, 4) and fine.shape == (1, 2, 16, 4)  # 2x2 and 4x4 key maps
    assert not hasattr(ShuntedAttention(16, num_heads=4, sr_ratio=1), "reductions")


def test_dynamic_position_bias_replaces_the_table() -> None:
    mixer = WindowAttention(32, num_heads=2, window_size=7, dynamic_position_bias=True)
    assert mixer.relative_position_bias_table is None
    assert mixer.dynamic_position_bias.pos_proj.out_features == 2  # CrossFormer: width / 16
    bias = mixer.position_bias(7, 7, torch.device("cpu"))
    assert bias.shape == (2, 49, 49)
    # a function of the offset only: equal offsets, equal bias
    torch.testing.assert_close(bias[:, 0, 8], bias[:, 1, 9])
    # smaller windows read the centre of the same function
    small = mixer.position_bias(3, 3, torch.device("cpu"))
    torch.testing.assert_close(small[:, 0, 4], bias[:, 0, 8])


def test_pooling_attention_strides_and_residual_pooling() -> None:
    """MViTv2's transition attention: Q stride 2 halves the map and widens it; K, V strided apart."""
    attn = PoolingAttention(8, num_heads=2, map_size=8, kv_stride=4, dim_out=16, q_stride=2)
    assert attn(torch.randn(2, 8, 8, 8)).shape == (2, 4, 4, 16)
    assert attn(torch.randn(2, 9, 7, 8)).shape == (2, 5, 4, 16)  # ceil, like the max-pooled shortcut
    assert attn.rel_pos_h.shape == (2 * 4 - 1, 8)  # 2 max(q side, kv side) - 1 offsets of head_dim


def test_pooling_attention_relative_positions_are_decomposed() -> None:
    """The position term of a query/key pair is q · (R_h[dy] + R_w[dx])."""
    attn = PoolingAttention(4, num_heads=1, map_size=3)
    q = torch.randn(1, 1, 3, 3, 4)
    terms = attn._position_terms(q, (3, 3))  # (1, 1, 9, 9)
    for (qy, qx), (ky, kx) in [((0, 0), (2, 1)), ((1, 2), (0, 0)), ((2, 2), (2, 2))]:
        rel = attn.rel_pos_h[qy - ky + 2] + attn.rel_pos_w[qx - kx + 2]
        torch.testing.assert_close(terms[0, 0, qy * 3 + qx, ky * 3 + kx], q[0, 0, qy, qx] @ rel)


def test_relative_attention_bias_depends_on_the_offset_only() -> None:
    attn = RelativeAttention(8, num_heads=2, map_size=4)
    bias = attn.position_bias(4, 4)  # (2, 16, 16), read from the table as is
    assert bias.shape == (2, 16, 16)
    torch.testing.assert_close(bias[:, 0, 5], bias[:, 10, 15])  # both: one row down, one column right
    torch.testing.assert_close(bias[:, 0, 0], attn.relative_position_bias_table[:, 3, 3])
    assert attn.position_bias(6, 3).shape == (2, 18, 18)  # other sizes: the table is resized


def test_focal_attention_sees_the_pooled_neighbourhood_and_the_cyclic_ring() -> None:
    """Window 2, ring 1, 3x3 pooled windows on an 8x8 map (4x4 windows)."""
    mixer = FocalAttention(8, num_heads=2, map_size=8, window_size=2, expand_size=1, focal_window=3)
    assert mixer.neighbour_bias.shape == (2, 4, 4 * 4 - 4 * 1)
    # interior window (rows 2-3, cols 4-5): the pooled 3x3 windows around it cover rows 0-5, cols 2-7
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[0:6, 2:8] = True
    assert torch.equal(_touched(mixer, 8, 8, (2, 4)), expected)
    # corner window: pooled windows rows/cols 0-3, plus the ring wrapping around the map (official)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[0:4, 0:4] = True
    expected[7, 0:3] = expected[0:3, 7] = expected[7, 7] = True
    assert torch.equal(_touched(mixer, 8, 8, (0, 0)), expected)


def test_focal_attention_on_a_map_within_one_window_drops_the_ring() -> None:
    mixer = FocalAttention(8, num_heads=2, map_size=5, window_size=7, expand_size=3, focal_window=1)
    assert mixer.window_size == 5 and mixer.neighbour_bias is None
    assert mixer(torch.randn(1, 5, 5, 8)).shape == (1, 5, 5, 8)


def test_factorized_attention_matches_coat_formulation() -> None:
    """CoaT's conv-attention written out head by head: softmax over the tokens of K, a d x d context,
    Q times it over sqrt(d), plus Q times a depthwise conv of V whose kernel depends on the head."""
    mixer = FactorizedAttention(32, num_heads=8)  # kernels 3, 5, 7 over heads 2, 3, 3 (d = 4)
    x = torch.randn(2, 5, 6, 32)
    q, k, v = mixer.qkv(x.flatten(1, 2)).view(2, 30, 3, 8, 4).permute(2, 0, 3, 1, 4)  # (B, heads, N, d)
    kernel_of_head = [3, 3, 5, 5, 5, 7, 7, 7]
    heads = []
    for head, kernel in enumerate(kernel_of_head):
        conv = next(c for c in mixer.crpe.convs if c.kernel_size[0] == kernel)
        first = kernel_of_head.index(kernel)  # the conv's channels start at its first head
        channels = slice((head - first) * 4, (head - first + 1) * 4)
        v_map = v[:, head].transpose(1, 2).reshape(2, 4, 5, 6)
        conv_v = F.conv2d(v_map, conv.weight[channels], conv.bias[channels], padding=kernel // 2, groups=4)
        context = k[:, head].softmax(dim=1).transpose(1, 2) @ v[:, head]  # (B, d, d)
        heads.append(q[:, head] @ context / 2 + q[:, head] * conv_v.flatten(2).transpose(1, 2))
    expected = mixer.proj(torch.cat(heads, dim=-1)).view(2, 5, 6, 32)
    torch.testing.assert_close(mixer(x), expected)
    assert split_heads(8, 3) == [2, 3, 3] and split_heads(2, 3) == [0, 1, 1]


def test_factorized_attention_class_token_is_a_key_without_position_term() -> None:
    mixer = FactorizedAttention(16, num_heads=2)
    x, token = torch.randn(1, 4, 4, 16), torch.randn(1, 1, 16)
    out, out_token = mixer.forward_with_tokens(x, token)
    sequence = torch.cat([token, x.flatten(1, 2)], dim=1)
    q, k, v = mixer.qkv(sequence).view(1, 17, 3, 2, 8).permute(2, 0, 3, 1, 4)
    attended = q @ (k.softmax(dim=2).transpose(-2, -1) @ v) * 8**-0.5  # (1, 2, 17, 8)
    token_expected = mixer.proj(attended[:, :, :1].transpose(1, 2).reshape(1, 1, 16))
    torch.testing.assert_close(out_token, token_expected)
    assert not torch.allclose(out, mixer(x))  # the token is one of the keys the pixels attend


def test_stage_mixers_share_one_conv_position_encoding() -> None:
    """CoaT: one relative position encoding per stage; ``share_crpe: false`` gives each block its own."""
    shared = build_model(tiny_config(["factorized", "factorized"]))
    blocks = shared.stages[0].blocks
    assert blocks[0].mixer.crpe is blocks[1].mixer.crpe
    separate = build_model(tiny_config([{"kind": "factorized", "share_crpe": False}] * 2))
    assert separate.stages[0].blocks[0].mixer.crpe is not separate.stages[0].blocks[1].mixer.crpe
    crpe_params = sum(sum(p.numel() for p in s.blocks[0].mixer.crpe.parameters()) for s in shared.stages)
    assert count_params(separate) - count_params(shared) == crpe_params


@pytest.mark.parametrize("size", [(5, 5), (6, 7)])
def test_conv_self_attention_against_its_definition(size: tuple[int, int]) -> None:
    """LVT's CSA, written out neighbourhood by neighbourhood: the 3x3 neighbourhood around every
    other position (stride 2, zero padding 1) is attended from its pooled token, its 9 outputs are
    put back where its tokens came from and the overlaps summed."""
    H, W = size
    C, heads, k, s = 8, 2, 3, 2
    mixer = ConvSelfAttention(C, num_heads=heads, kernel_size=k, stride=s)
    x = torch.randn(1, H, W, C)
    pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), s, s, ceil_mode=True).permute(0, 2, 3, 1)[0]
    d = C // heads
    out = torch.zeros(H, W, C)
    for i, j in itertools.product(range(pooled.shape[0]), range(pooled.shape[1])):
        cells = [(s * i - 1 + a, s * j - 1 + b) for a in range(k) for b in range(k)]
        inside = [0 <= r < H and 0 <= c < W for r, c in cells]
        tokens = torch.stack(
            [x[0, r, c] if ok else torch.zeros(C) for (r, c), ok in zip(cells, inside, strict=True)]
        )
        values = torch.einsum("koc,kc->ko", mixer.value_weight, tokens)  # (9, C)
        attn = mixer.attn(pooled[i, j]).view(heads, k * k, k * k) * d**-0.5
        attn = attn.softmax(-1)  # (heads, 9 outputs, 9 values)
        outputs = torch.einsum("nij,jnd->ind", attn, values.view(k * k, heads, d)).reshape(k * k, C)
        for (r, c), ok, o in zip(cells, inside, outputs, strict=True):
            if ok:
                out[r, c] += o
    torch.testing.assert_close(mixer(x)[0], mixer.proj(out), rtol=1e-4, atol=1e-5)


def test_recursive_atrous_attention_recursion_and_atrous_queries() -> None:
    mixer = RecursiveAtrousAttention(8, num_heads=2, sr_ratio=2, recursions=2, qkv_bias=False)
    x = torch.randn(1, 6, 6, 8)
    once = mixer._attention
    torch.testing.assert_close(mixer(x), F.silu(once(F.silu(once(x)) + x)))
    # one step, written out: queries through one shared depthwise 3x3 at dilations 1, 3, 5, each
    # through SiLU, summed; keys and values from the map reduced 2x
    q = mixer.q(x).permute(0, 3, 1, 2)
    q = sum(F.silu(F.conv2d(q, mixer.atrous.weight, padding=r, dilation=r, groups=8)) for r in (1, 3, 5))
    q = q.permute(0, 2, 3, 1).reshape(1, 36, 2, 4).transpose(1, 2)  # (B, heads, N, d)
    k, v = mixer.kv(mixer.reduce(x)).reshape(1, 9, 2, 2, 4).permute(2, 0, 3, 1, 4)
    attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, 6, 6, 8)
    torch.testing.assert_close(once(x), mixer.proj(attended))


@pytest.mark.parametrize("stride", [1, 2])
def test_halo_factorized_position_and_unmasked_padding_against_the_definition(stride: int) -> None:
    """HaloNet's (timm's) halo attention, block by block: queries every ``stride``-th position of
    the block, keys the block and its halo with zeros beyond the map (not masked), logits
    q.k / sqrt(d) + q . r_h[key row - query row + w - 1] + q . r_w[key col - query col + w - 1]."""
    C, heads, b, h = 8, 2, 4, 1
    mixer = HaloAttention(
        C,
        heads,
        block_size=b,
        halo_size=h,
        relative_position_bias=False,
        factorized_position=True,
        mask_outside=False,
        output_proj=False,
        stride=stride,
    )
    with torch.no_grad():
        mixer.height_rel.normal_()
        mixer.width_rel.normal_()
    x = torch.randn(1, 8, 8, C)
    q = mixer.q(x[:, ::stride, ::stride])[0]  # (8/s, 8/s, C)
    kv = F.pad(mixer.kv(x), (0, 0, h, h, h, h))[0]  # (10, 10, 2C), zeros around
    d, w, bq = C // heads, b + 2 * h, b // stride
    out = torch.zeros(8 // stride, 8 // stride, C)
    for by, bx, n in itertools.product(range(2), range(2), range(heads)):
        window = kv[by * b : by * b + w, bx * b : bx * b + w].reshape(w * w, heads, 2, d)[:, n]
        for y, xq in itertools.product(range(bq), range(bq)):
            qv = q[by * bq + y, bx * bq + xq, n * d : (n + 1) * d]
            logits = torch.stack(
                [
                    qv @ window[r * w + c, 0] / d**0.5
                    + qv @ mixer.height_rel[r - y + w - 1]
                    + qv @ mixer.width_rel[c - xq + w - 1]
                    for r in range(w)
                    for c in range(w)
                ]
            )
            out[by * bq + y, bx * bq + xq, n * d : (n + 1) * d] = logits.softmax(0) @ window[:, 1]
    torch.testing.assert_close(mixer(x)[0], out, rtol=1e-4, atol=1e-5)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention of (L, C) queries on (S, C) keys, values (S, heads * Dv), by hand."""
    d = q.shape[1] // heads
    out = []
    for n in range(heads):
        logits = q[:, n * d : (n + 1) * d] @ k[:, n * d : (n + 1) * d].T / d**0.5
        out.append(logits.softmax(-1) @ v.view(v.shape[0], heads, -1)[:, n])
    return torch.stack(out, dim=1)  # (L, heads, Dv)


def test_separable_window_attention_against_its_definition() -> None:
    """SepViT's DSSA written out window by window on a 14x14 map of 2x2 windows of 7."""
    C, heads, ws = 8, 2, 7
    mixer = SeparableWindowAttention(C, num_heads=heads, map_size=14, window_size=ws)
    with torch.no_grad():
        mixer.window_tokens.normal_()
    x = torch.randn(1, 14, 14, C)
    dsa = []
    for wy, wx in itertools.product(range(2), range(2)):
        tokens = torch.cat(
            [
                mixer.window_tokens[wy, wx][None],
                x[0, wy * ws : (wy + 1) * ws, wx * ws : (wx + 1) * ws].reshape(-1, C),
            ]
        )
        q, k, v = mixer.qkv(tokens).chunk(3, dim=-1)
        dsa.append(_attend(q, k, v, heads).reshape(-1, C) + tokens)  # (50, C) with its shortcut
    dsa = torch.stack(dsa)  # (4 windows, 50, C)
    q, k = mixer.qk(mixer.token_act(mixer.token_norm(dsa[:, 0]))).chunk(2, dim=-1)
    d = C // heads
    values = (
        dsa[:, 1:].reshape(4, 49, heads, d).permute(0, 2, 1, 3).reshape(4, -1)
    )  # per window: (heads, 49 d)
    mixed = _attend(q, k, values, heads).reshape(4, heads, 49, d).permute(0, 2, 1, 3).reshape(4, 49, C)
    out = (mixed + dsa[:, 1:]).reshape(2, 2, ws, ws, C).permute(0, 2, 1, 3, 4).reshape(14, 14, C)
    torch.testing.assert_close(mixer(x)[0], mixer.proj(out), rtol=1e-4, atol=1e-5)


def test_separable_window_tokens_follow_the_window_grid() -> None:
    """Built for a 4x4 window grid; a 3x5 grid of windows (a map of 21x35) resizes the tokens."""
    mixer = SeparableWindowAttention(8, num_heads=2, map_size=28, window_size=7)
    assert mixer.window_tokens.shape == (4, 4, 8)
    assert mixer._tokens(3, 5).shape == (15, 8)
    assert mixer(torch.randn(2, 21, 35, 8)).shape == (2, 21, 35, 8)
    single = SeparableWindowAttention(8, num_heads=2, map_size=7, window_size=7)
    assert single.window_tokens is None and not hasattr(single, "qk")  # one window: no PSA
