"""Fixed sin-cos position tables against values written out by hand from their formulas.

MAE / Prithvi: ``ω_i = 1 / 10000^(i/(d/2))``, ``[sin(pω), cos(pω)]``; 2D = [column, row] halves;
3D = [column 6/16, row 6/16, frame 4/16]; Clay: ``ω_i = gsd / 10000^(2·(i/(d/4−1))/d)``.
"""

from __future__ import annotations

import math

import pytest
import torch
from eoembed.nn.pos_embed import sincos_1d, sincos_1d_simple, sincos_2d, sincos_2d_gsd, sincos_3d


def _row(p: float, dim: int) -> list[float]:
    """One MAE 1D row, by hand: dim=4 → ω = (1, 1/100)."""
    om = [10000 ** (-i / (dim / 2)) for i in range(dim // 2)]
    return [math.sin(p * o) for o in om] + [math.cos(p * o) for o in om]


def test_1d_matches_the_formula_written_out():
    table = sincos_1d(4, [0, 1, 7])
    expected = [[0.0, 0.0, 1.0, 1.0],
                [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)],
                [math.sin(7), math.sin(0.07), math.cos(7), math.cos(0.07)]]
    assert table.dtype == torch.float32
    torch.testing.assert_close(table, torch.tensor(expected), atol=1e-7, rtol=0)


def test_2d_is_column_half_then_row_half_row_major():
    table = sincos_2d(8, (2, 3), cls_token=True)
    assert table.shape == (1 + 6, 8)
    assert table[0].abs().sum() == 0  # class token row is zeros
    # token (row 1, column 2) is index 1·3 + 2 = 5 (+1 for the class token)
    torch.testing.assert_close(table[1 + 5], torch.tensor(_row(2, 4) + _row(1, 4)), atol=1e-7,
                               rtol=0)
    torch.testing.assert_close(table[1 + 3], torch.tensor(_row(0, 4) + _row(1, 4)), atol=1e-7,
                               rtol=0)


def test_2d_resolution_scale_multiplies_coordinates_per_sample():
    scaled = sincos_2d(8, (2, 2), scale=torch.tensor([1.0, 2.5]), cls_token=True)
    assert scaled.shape == (2, 5, 8)
    torch.testing.assert_close(scaled[0], sincos_2d(8, (2, 2), cls_token=True))
    # token (row 1, column 1) at scale 2.5 encodes coordinates (2.5, 2.5)
    torch.testing.assert_close(scaled[1, 4], torch.tensor(_row(2.5, 4) + _row(2.5, 4)), atol=1e-7,
                               rtol=0)
    torch.testing.assert_close(sincos_2d(8, (2, 2), scale=2.5), scaled[1, 1:])


def test_3d_splits_channels_column_row_frame():
    table = sincos_3d(16, (2, 2, 3))
    assert table.shape == (12, 16)
    # token (frame 1, row 0, column 2) → index 1·6 + 0·3 + 2 = 8
    want = _row(2, 6) + _row(0, 6) + _row(1, 4)
    torch.testing.assert_close(table[8], torch.tensor(want), atol=1e-7, rtol=0)
    assert sincos_3d(16, (1, 2, 2), cls_token=True)[0].abs().sum() == 0
    with pytest.raises(ValueError, match="divisible by 16"):
        sincos_3d(24, (1, 2, 2))


def test_gsd_table_follows_the_clay_form():
    table = sincos_2d_gsd(8, (2, 2), gsd=10.0)
    om = [10.0, 10.0 / 10000 ** (2 * 1 / 8)]  # q = 2: steps (0, 1)
    # token (row 1, column 0) → index 2: x = 0, y = 1
    want = [0.0, 0.0, 1.0, 1.0] + [math.sin(o) for o in om] + [math.cos(o) for o in om]
    torch.testing.assert_close(table[2], torch.tensor(want), atol=1e-6, rtol=0)


def test_simple_1d_uses_dim_half_minus_one():
    table = sincos_1d_simple([3.0], 6)
    om = [1.0, 10000 ** -0.5, 1e-4]  # i / (3 − 1) for i = 0, 1, 2
    want = [math.sin(3 * o) for o in om] + [math.cos(3 * o) for o in om]
    torch.testing.assert_close(table[0], torch.tensor(want), atol=1e-7, rtol=0)
