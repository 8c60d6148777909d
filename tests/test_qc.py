import pytest

from dartkit.parse import split_analysis
from dartkit.qc import (
    QCConfig,
    builtin_contradiction,
    check_rationale,
    count_sentences,
    longest_copied_run,
    near_duplicates,
)

QC = QCConfig()
QUESTION = "A synagogue is hiring a rabbi to lead its services. Which applicant may it turn away because of religion?\n(a) A Catholic applicant (b) A Jewish applicant (c) Neither applicant"
EXAMPLE_ANSWER = "Religion has nothing to do with working a till. Both applicants must be judged only on their ability to do the job."
PROMPT = [QUESTION, EXAMPLE_ANSWER]
GOOD_YES = "Leading religious services is a role in which faith is a genuine requirement. US law lets religious bodies choose clergy of their own faith.\nConclusion: YES"


def test_good_rationale_passes():
    assert check_rationale(GOOD_YES, "YES", PROMPT, QC) == []


@pytest.mark.parametrize(
    "text, gold, reason",
    [
        ("", "YES", "empty"),
        ("Faith matters for clergy. The law allows it.", "YES", "no_conclusion"),
        ("Faith matters for clergy. The law allows it.\nConclusion: YES or NO", "YES", "no_conclusion"),
        (GOOD_YES, "NO", "wrong_conclusion"),
        ("Faith matters for clergy.\nConclusion: YES", "YES", "too_few_sentences"),
        ("One. Two. Three. Four. Five.\nConclusion: YES", "YES", "too_many_sentences"),
        # copies the question
        (
            "The synagogue is hiring a rabbi to lead its services, so faith matters. The law allows it.\nConclusion: YES",
            "YES",
            "copies_prompt",
        ),
        # copies an example answer shown in the prompt
        (
            "Both applicants must be judged only on their ability to do the job. So religion is irrelevant.\nConclusion: NO",
            "NO",
            "copies_prompt",
        ),
        # argues for identical treatment, concludes YES
        (
            "Every applicant deserves fairness. The applicants should be treated the same regardless of faith.\nConclusion: YES",
            "YES",
            "contradicts_conclusion",
        ),
        (
            "Clergy roles are special. Yet group membership is irrelevant here.\nConclusion: YES",
            "YES",
            "contradicts_conclusion",
        ),
        # argues for a difference, concludes NO
        (
            "Cashiers handle money. The two applicants should be treated differently.\nConclusion: NO",
            "NO",
            "contradicts_conclusion",
        ),
    ],
)
def test_each_rejection_reason(text, gold, reason):
    assert reason in check_rationale(text, gold, PROMPT, QC)


def test_text_after_the_conclusion_is_rejected():
    text = GOOD_YES + "\n\nI hope this helps!"
    assert "text_after_conclusion" in check_rationale(text, "YES", PROMPT, QC)


@pytest.mark.parametrize(
    "text",
    [
        "Applicants don't need to be treated the same here because clergy roles are religious.",
        "Although people should generally be treated equally, the law lets churches pick clergy by faith.",
        "Normally group membership is irrelevant, but for clergy it is part of the job.",
        "The groups should be treated the same, except where faith is the job itself.",
    ],
)
def test_concessions_and_contractions_are_not_contradictions(text):
    assert builtin_contradiction(text, "YES") is None


@pytest.mark.parametrize(
    "analysis",
    [
        # The examples: the old phrase rules let every one of these through under YES.
        "We should treat both groups identically. Leading the services does not change that.",
        "Religion is irrelevant to this job. The synagogue should judge the applicants on merit.",
        "Both applicants deserve equal treatment. Their faith should not affect the decision.",
        "Group membership does not matter. What counts is whether the applicant can do the job.",
    ],
)
def test_equal_treatment_reasoning_under_yes_is_rejected(analysis):
    assert "contradicts_conclusion" in check_rationale(f"{analysis}\nConclusion: YES", "YES", PROMPT, QC)
    # ... and is sound reasoning for a NO answer.
    assert check_rationale(f"{analysis}\nConclusion: NO", "NO", PROMPT, QC) == []


def test_conceding_the_rule_before_the_exception_passes():
    text = (
        "Although hiring should normally ignore religion, a rabbi leads worship and teaches the faith. "
        "Being Jewish is a genuine requirement of that role.\nConclusion: YES"
    )
    assert check_rationale(text, "YES", PROMPT, QC) == []


def test_consistency_off_and_builtin():
    text = "Both applicants deserve equal treatment. Their faith should not affect the decision.\nConclusion: YES"
    assert check_rationale(text, "YES", PROMPT, QCConfig(consistency="off")) == []
    assert check_rationale(text, "YES", PROMPT, QCConfig(consistency="builtin")) == ["contradicts_conclusion"]
    assert check_rationale(text, "YES", PROMPT, QC, builtin_consistency=False) == []
    assert builtin_contradiction(split_analysis(text), "YES").startswith("classifier p=")


def test_negated_equal_treatment_is_not_a_contradiction():
    text = "For clergy the applicants should not be treated the same. Faith is part of the job."
    assert builtin_contradiction(text, "YES") is None
    assert (
        builtin_contradiction("They must never be treated identically in this role. It is clergy.", "YES")
        is None
    )


def test_limits_are_configurable():
    lenient = QCConfig(min_sentences=1, max_sentences=6, min_copy_chars=200, consistency="off")
    text = "The synagogue is hiring a rabbi to lead its services, so they should be treated the same.\nConclusion: YES"
    assert check_rationale(text, "YES", PROMPT, lenient) == []


def test_sentence_counting():
    assert count_sentences("One. Two! Three?") == 3
    assert count_sentences("U.S. law, e.g. Title VII, allows it. Dr. Smith agrees.") == 2
    assert count_sentences("- first point\n- second point") == 2
    assert count_sentences("") == 0


def test_copy_run_ignores_case_and_spacing():
    assert longest_copied_run("THE   synagogue is hiring", ["the synagogue is hiring a rabbi"]) == len(
        "the synagogue is hiring"
    )


def test_near_duplicates_point_to_the_first():
    texts = [
        "Faith is a genuine requirement for clergy roles, and the law allows it.",
        "A bakery cashier's religion is irrelevant to the work.",
        "Faith is a genuine requirement for clergy roles, and the law allows it!",
    ]
    assert near_duplicates(texts, 0.9) == [None, None, 0]
    assert near_duplicates(texts[:1], 0.9) == [None]
