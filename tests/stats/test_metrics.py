"""``dartkit eval`` metrics: rates by hand, and intervals that respect scenario groups."""

import pytest

from dartkit.records import Generation
from dartkit.stats.inference import wilson_ci
from dartkit.stats.metrics import evaluation_metrics

RATES = ("accuracy", "accuracy_equal", "accuracy_diff", "refusal_rate", "unparseable_rate")


def gen(i, gold, pred, bench="D1", refusal=False, key=None):
    extra = {"scenario_key": key} if key else {}
    return Generation(
        id=str(i),
        model="m",
        prompt="p",
        text="t",
        conclusion=pred,
        refusal=refusal,
        gold=gold,
        benchmark=bench,
        **extra,
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
    assert m["accuracy"] == 0 and m["macro_f1"] == 0


@pytest.mark.parametrize("keyed", [False, True])
def test_zero_accuracy_interval_is_not_zero_width(keyed):
    """0 of 40 right is not proof that the model is never right: the interval reaches above 0."""
    gens = [gen(i, "NO", None, key=f"s{i // 4}" if keyed else None) for i in range(40)]
    m = evaluation_metrics(gens, n_resamples=200)
    assert m["accuracy"] == 0
    assert m["accuracy_ci95"] == pytest.approx(wilson_ci(0, 40)) and m["accuracy_ci95"][1] > 0.08
    assert m["ci_method"] == "Wilson score"
    assert m["unparseable_rate_ci95"] == pytest.approx(wilson_ci(40, 40))
    assert m["accuracy_diff_ci95"] is None  # no gold-YES items


def test_scenario_groups_widen_the_accuracy_interval():
    """Ten scenarios of ten items each, every scenario all right or all wrong: ten outcomes, not 100."""
    gens = [gen(i, "YES", "YES" if (i // 10) % 2 else "NO", key=f"s{i // 10}") for i in range(100)]
    keyed = evaluation_metrics(gens, n_resamples=2000)
    plain = evaluation_metrics([g.model_copy(update={"scenario_key": None}) for g in gens], n_resamples=2000)
    assert keyed["ci_method"] == "cluster bootstrap over 10 scenario groups, 2000 resamples"
    assert plain["ci_method"] == "Wilson score"
    assert plain["accuracy_ci95"] == pytest.approx(wilson_ci(50, 100))
    width = lambda m: m["accuracy_ci95"][1] - m["accuracy_ci95"][0]  # noqa: E731
    assert width(keyed) > 2 * width(plain)
    assert keyed["per_benchmark"]["D1"]["ci_method"] == keyed["ci_method"]


def test_every_rate_has_an_interval_and_a_method():
    gens = [
        gen(i, "YES" if i % 2 else "NO", ("YES", "NO", None)[i % 3], refusal=i % 5 == 0, key=f"s{i // 3}")
        for i in range(60)
    ]
    m = evaluation_metrics(gens, n_resamples=300)
    for name in RATES:
        lo, hi = m[f"{name}_ci95"]
        assert 0 <= lo <= m[name] <= hi <= 1, name
        assert m["ci_methods"][name] == "cluster bootstrap over 20 scenario groups, 300 resamples"


def test_ci_narrows_with_more_items():
    small = evaluation_metrics(
        [gen(i, "YES", "YES" if i % 2 else "NO", key=f"s{i}") for i in range(20)], n_resamples=1000
    )
    large = evaluation_metrics(
        [gen(i, "YES", "YES" if i % 2 else "NO", key=f"s{i}") for i in range(400)], n_resamples=1000
    )
    width = lambda m: m["accuracy_ci95"][1] - m["accuracy_ci95"][0]  # noqa: E731
    assert width(large) < width(small) / 2


def test_label_baselines_by_hand():
    """The issue's test split: 18 YES / 15 NO, so always answering YES scores 54.5%."""
    from dartkit.stats.metrics import label_baselines

    gold = ["YES"] * 18 + ["NO"] * 15 + [None]
    benchmarks = ["D1"] * 10 + ["N3"] * 23 + ["D1"]
    b = label_baselines(gold, benchmarks)
    assert (b["n"], b["n_yes"], b["n_no"], b["majority"]) == (33, 18, 15, "YES")
    assert b["always_yes"]["accuracy"] == pytest.approx(18 / 33)
    assert b["always_no"]["accuracy"] == pytest.approx(15 / 33)
    assert b["always_yes"]["accuracy_diff"] == 1.0 and b["always_yes"]["accuracy_equal"] == 0.0
    assert b["always_no"]["no_rate"] == 1.0 and b["always_no"]["unparseable_rate"] == 0.0
    # macro-F1 of always YES: F1(YES) = 2p/(1+p) with precision p = 18/33, recall 1; F1(NO) = 0.
    p = 18 / 33
    assert b["always_yes"]["macro_f1"] == pytest.approx(p / (1 + p))
    # D1 holds 10 YES items only; N3 8 YES and 15 NO.
    assert (
        b["per_benchmark"]["D1"]["majority"] == "YES"
        and b["per_benchmark"]["D1"]["always_no"]["accuracy"] == 0
    )
    assert b["per_benchmark"]["N3"]["majority"] == "NO"
    assert b["per_benchmark"]["N3"]["always_no"]["accuracy"] == pytest.approx(15 / 23)
    assert label_baselines(["YES", "NO"])["majority"] is None


def test_label_baselines_match_a_constant_model():
    """A model that always answers YES scores exactly the always-YES baseline."""
    from dartkit.stats.metrics import label_baselines

    golds = ["YES", "NO", "NO", "YES", "NO"]
    m = evaluation_metrics([gen(i, g, "YES") for i, g in enumerate(golds)])
    b = label_baselines(golds)["always_yes"]
    for k in ("accuracy", "accuracy_equal", "accuracy_diff", "yes_rate", "no_rate", "macro_f1"):
        assert b[k] == pytest.approx(m[k]), k
