"""Agreement statistics against published worked examples."""

import math

import numpy as np
import pytest

from dartkit.stats.agreement import (
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    landis_koch,
    pairwise_cohen,
)


def test_cohen_kappa_textbook_two_by_two():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15: p_o = 0.7, p_e = 0.5, κ = 0.4.
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert landis_koch(0.4) == "fair"


def test_fleiss_kappa_worked_example():
    # Fleiss' worked example: 10 subjects, 14 raters, 5 categories; P-bar = 0.378, P-e = 0.213, κ ≈ 0.210.
    table = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=0.001)


# Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing data.
NAN = math.nan
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]


@pytest.mark.parametrize(("level", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_published_example(level, expected):
    assert krippendorff_alpha(np.array(KRIPPENDORFF_2011), level) == pytest.approx(expected, abs=0.001)


def test_undefined_agreement_is_none_not_a_number():
    assert cohen_kappa(["yes"] * 5, ["yes"] * 5) is None
    assert krippendorff_alpha(np.array([[1, 1, 1], [1, 1, 1]]), "nominal") is None
    assert landis_koch(None) is None and landis_koch(-0.1) == "poor" and landis_koch(0.85) == "almost perfect"


def test_pairwise_cohen_uses_shared_items_and_gives_intervals():
    labels = {
        "ann1": {f"i{k}": k % 2 for k in range(30)},
        "ann2": {f"i{k}": (k % 2 if k % 5 else 1 - k % 2) for k in range(30)},
        "ann3": {f"i{k}": k % 2 for k in range(10)},
    }
    out = pairwise_cohen(labels, n_resamples=300)
    assert set(out) == {"ann1|ann2", "ann1|ann3", "ann2|ann3"}
    assert out["ann1|ann3"]["n_items"] == 10 and out["ann1|ann3"]["value"] == pytest.approx(1.0)
    low, high = out["ann1|ann2"]["ci95"]
    assert low <= out["ann1|ann2"]["value"] <= high and out["ann1|ann2"]["band"] == "moderate"
