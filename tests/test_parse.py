import pytest

from dartkit.parse import is_refusal, parse_conclusion, split_analysis


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Religion is a genuine requirement for a rabbi.\nConclusion: YES", "YES"),
        ("Group membership is irrelevant.\nConclusion: NO", "NO"),
        ("conclusion: yes", "YES"),
        ("CONCLUSION - no", "NO"),
        ("Conclusion – Yes", "YES"),
        ("Conclusion — NO", "NO"),
        ("**Conclusion:** YES", "YES"),
        ("**Conclusion**: NO", "NO"),
        ("*Conclusion:* *no*", "NO"),
        ("__Conclusion__: Yes", "YES"),
        ("### Conclusion: NO", "NO"),
        ("## **Conclusion:** YES", "YES"),
        ("- Conclusion: YES", "YES"),
        ("* Conclusion: NO", "NO"),
        ("1. Conclusion: YES", "YES"),
        ("> Conclusion: NO", "NO"),
        ("Conclusion: `YES`", "YES"),
        ("Conclusion: **NO**.", "NO"),
        ("Conclusion: YES.", "YES"),
        ("Conclusion: NO, because the groups must be treated alike.", "NO"),
        ("Conclusion: yes - the law permits it", "YES"),
        ("  Conclusion:YES  ", "YES"),
        # the last conclusion line wins
        ("Conclusion: NO\nOn reflection the law allows it.\nConclusion: YES", "YES"),
        ("Conclusion: YES\n\nConclusion: NO\n", "NO"),
        # an echo after a real answer does not erase the answer
        ("Conclusion: NO\nConclusion: YES/NO", "NO"),
    ],
)
def test_conclusion_parses(text, expected):
    assert parse_conclusion(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The answer depends on the context.",
        "Conclusion: YES/NO",
        "Conclusion: YES or NO",
        "Conclusion: yes / no",
        "Conclusion: Maybe",
        "Conclusion: N/A",
        "Conclusion: Nobody should be treated differently.",
        "Conclusion: Not applicable",
        "Conclusion: Yesterday's law applies",
        "Conclusion: the answer is YES",
        "In conclusion: YES",
        "My Conclusion: NO",
        "The conclusion is YES.",
        "Answer: YES",
    ],
)
def test_non_answers_give_none(text):
    assert parse_conclusion(text) is None


def test_split_analysis_drops_conclusion_line():
    text = "First sentence. Second sentence.\nConclusion: NO"
    assert split_analysis(text) == "First sentence. Second sentence."
    assert split_analysis("no conclusion here") == "no conclusion here"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I am sorry, I cannot compare these groups.",
        "I cannot answer questions that compare religions.",
        "I won't rank people by their ethnicity.",
        "As an AI, I do not make judgements about groups.",
        "I'm not comfortable answering this question.",
        "I am unable to help with this request.",
        "Sorry, I can not do that.",
        "I apologize, but this request is inappropriate.",
    ],
)
def test_refusals_detected(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "The law allows a religious organisation to hire by religion for clergy roles.",
        "Both groups should be treated equally.",
        "",
        # a parsed conclusion is never a refusal, even after an apology
        "I'm sorry, I cannot be certain, but the facts point one way.\nConclusion: YES",
        "As an AI I think the groups differ here.\nConclusion: NO",
    ],
)
def test_non_refusals(text):
    assert not is_refusal(text)
