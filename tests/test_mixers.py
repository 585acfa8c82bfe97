"""The contract every registered token mixer must meet, plus checks of each mixer's own semantics."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from hvtnas import MIXERS, build_model
from hvtnas.models.mixers.attention import ShiftedWindowAttention, SpatialReductionAttention, WindowAttention
from hvtnas.models.mixers.pooling import Pooling
from hvtnas.models.mixers.shift import Shift
from tests.conftest import tiny_config


def _mixer_pattern(kind: str) -> list:
    # MBConv blocks have no FFN (CoAtNet): give the stage ffn "none" and a BatchNorm pre-norm
    return [{"kind": kind}]


@pytest.mark.parametrize("resolution", [32, 224])
@pytest.mark.parametrize("kind", MIXERS.names())
def test_every_mixer_forward_backward(kind: str, resolution: int) -> None:
    stage = {"ffn": "none", "norm": "batchnorm"} if kind == "mbconv" else {}
    cfg = tiny_config(_mixer_pattern(kind), stage=stage)
    model = build_model(cfg)
    x = torch.randn(2, 3, resolution, resolution)
    with torch.inference_mode():  # anything cached here must still work for training below
        model.eval()(x)
    model.train()
    pyramid = model.forward_features(x)
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
    if resolution == 224:  # at 32 the last map is 1x1, where attention weights carry no gradient
        zero = [n for n, p in model.named_parameters() if ".mixer." in n and not p.grad.abs().sum() > 0]
        assert not zero, f"{kind}: all-zero gradient in {zero}"


@pytest.mark.parametrize("kind", MIXERS.names())
def test_every_mixer_declares_its_contract(kind: str) -> None:
    cls = MIXERS.get(kind)
    params = cls.Params(kind=kind)  # defaults must be valid
    kwargs = params.model_dump(exclude={"kind"})
    if cls.uses_heads:
        kwargs["num_heads"] = 2
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
