import pytest

from dartkit.records import Generation
from dartkit.report.metrics import evaluation_metrics


def gen(i, gold, pred, bench="D1", refusal=False):
    return Generation(
        id=str(i),
        model="m",
        prompt="p",
        text="t",
        conclusion=pred,
        refusal=refusal,
        gold=gold,
        benchmark=bench,
    )


def test_metrics_by_hand():
    gens = [
        gen(0, "YES", "YES"),
        gen(1, "YES", "NO"),
        gen(2, "YES", None, refusal=True),
        gen(3, "NO", "NO", bench="N2"),
        gen(4, "NO", "NO", bench="N2"),
        gen(5, "NO", None, bench="N2"),
    ]
    m = evaluation_metrics(gens, n_resamples=500)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["accuracy_diff"] == pytest.approx(1 / 3)
    assert m["accuracy_equal"] == pytest.approx(2 / 3)
    assert m["yes_rate"] == pytest.approx(1 / 6)
    assert m["unparseable_rate"] == pytest.approx(2 / 6)
    assert m["refusal_rate"] == pytest.approx(1 / 6)
    # YES: precision 1/1, recall 1/3 -> F1 0.5; NO: precision 2/3, recall 2/3 -> F1 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    lo, hi = m["accuracy_ci95"]
    assert 0 <= lo <= 0.5 <= hi <= 1
    assert set(m["per_benchmark"]) == {"D1", "N2"}
    assert m["per_benchmark"]["N2"]["accuracy"] == pytest.approx(2 / 3)
    assert m["per_benchmark"]["D1"]["accuracy_equal"] is None


def test_unparseable_counts_as_wrong():
    m = evaluation_metrics([gen(i, "NO", None) for i in range(4)], n_resamples=200)
    assert m["accuracy"] == 0 and m["macro_f1"] == 0 and m["accuracy_ci95"] == [0.0, 0.0]


def test_ci_narrows_with_more_items():
    small = evaluation_metrics([gen(i, "YES", "YES" if i % 2 else "NO") for i in range(20)], n_resamples=1000)
    large = evaluation_metrics(
        [gen(i, "YES", "YES" if i % 2 else "NO") for i in range(400)], n_resamples=1000
    )
    width = lambda m: m["accuracy_ci95"][1] - m["accuracy_ci95"][0]  # noqa: E731
    assert width(large) < width(small) / 2
