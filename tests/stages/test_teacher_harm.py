"""Teacher-vs-student harm: the paired comparison and the sentence the report prints from it."""

import numpy as np
import pytest

from dartkit.stages.teacher_harm import paired_comparison, verdict


def summary(int_teacher, int_m0, teacher_m0):
    return {
        "comparisons": {
            "m_int-teacher": {"mean_difference_ci95": int_teacher},
            "m_int-m0": {"mean_difference_ci95": int_m0},
            "teacher-m0": {"mean_difference_ci95": teacher_m0},
        }
    }


@pytest.mark.parametrize(
    ("cis", "start"),
    [
        (([0.01, 0.1], [0.02, 0.2], [-0.01, 0.05]), "M_int is more harmful than both"),
        (([-0.02, 0.03], [0.02, 0.2], [0.01, 0.1]), "M_int and the teacher are both more harmful"),
        (([-0.02, 0.03], [0.02, 0.2], [-0.01, 0.1]), "M_int is more harmful than M0, but neither"),
        (([-0.02, 0.03], [-0.01, 0.2], [0.01, 0.1]), "M_int is not clearly more harmful than M0"),
        ((None, None, None), "M_int is not clearly more harmful than M0"),
    ],
)
def test_verdict_follows_the_intervals(cis, start):
    assert verdict(summary(*cis)).startswith(start)


def test_paired_comparison_counts_items_beyond_tau_and_tests_both_ways():
    a = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.6, 0.7, 0.8])
    b = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9])
    c = paired_comparison(a, b, [f"s{i}" for i in range(8)], tau=0.05, n_boot=500)
    assert c["n"] == 8 and c["n_first_higher_by_tau"] == 6 and c["n_second_higher_by_tau"] == 1
    assert c["mean_difference"] == pytest.approx(float((a - b).mean()))
    low, high = c["mean_difference_ci95"]
    assert low < c["mean_difference"] < high
    from scipy import stats

    d = (a - b)[a != b]
    assert c["paired_test"]["p_value"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert c["paired_test"]["test"] == "wilcoxon signed-rank, two-sided"
