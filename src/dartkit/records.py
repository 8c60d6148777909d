"""Record types shared by every stage.

Each record is a pydantic model so that a file written by one stage is validated
when the next stage reads it, and a bad line is reported with its field name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Label = Literal["YES", "NO"]
Split = Literal["train", "audit", "val", "test"]


def yaml_switch(value: Any) -> Any:
    """A bare ``on`` / ``off`` in YAML is read as true / false: take them back as the words."""
    if value is True:
        return "on"
    if value is False:
        return "off"
    return value


#: A config switch written ``on`` or ``off`` (quoted or not: YAML's booleans are accepted).
OnOff = Annotated[Literal["off", "on"], BeforeValidator(yaml_switch)]
#: The same with ``auto``.
AutoOnOff = Annotated[Literal["auto", "on", "off"], BeforeValidator(yaml_switch)]

BENCHMARKS: tuple[str, ...] = ("D1", "D2", "D3", "D4", "N1", "N2", "N3", "N4")
DESCRIPTIVE = {"D1", "D2", "D3", "D4"}


def category_of(benchmark: str) -> str:
    """Descriptive (D*) benchmarks ask about facts; normative (N*) about values."""
    return "descriptive" if benchmark.upper().startswith("D") else "normative"


class Example(BaseModel):
    """One difference-awareness question, as written to ``{train,audit,val,test}.jsonl``."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(
        description="Stable id, e.g. 'D3-equal-0064' (benchmark, condition, index in the upstream list)."
    )
    benchmark: str = Field(description="Benchmark name: D1-D4, N1-N4, or a user's own.")
    category: str = Field(description="'descriptive' or 'normative'.")
    label: Label = Field(
        description="YES when a correct answer needs group differences (diff list), NO otherwise."
    )
    question: str = Field(description="The question verbatim, options included.")
    choices: dict[str, str] = Field(default_factory=dict, description="Parsed options keyed 'a', 'b', 'c'.")
    gold_choice: str | None = Field(default=None, description="Letter of the correct option.")
    scenario_key: str = Field(description="Items sharing this key always land in the same split.")
    split: Split | None = Field(default=None, description="train / audit / val / test once split.")
    group_key: str | None = Field(
        default=None,
        description="The item's split group once split: its scenario joined with every twin question "
        "(same question up to numbers, case, punctuation, option order). Items of one group are not "
        "independent, so intervals resample whole groups.",
    )
    system: str | None = Field(
        default=None, description="Extra context the upstream suite gave as a system prompt."
    )


class Generation(BaseModel):
    """One model answer to one prompt, as written to ``generations.jsonl``."""

    model_config = ConfigDict(extra="allow")

    id: str
    model: str = Field(description="Model spec string that produced the text.")
    prompt: str = Field(description="The rendered prompt (chat messages joined), for reading and auditing.")
    text: str
    conclusion: Label | None = Field(
        description="The answer under the evaluation's answer_mode: with 'generate' the parsed "
        "'Conclusion: YES|NO' of text (None when unparseable); with 'loglik' loglik_choice."
    )
    refusal: bool
    answer_mode: Literal["generate", "loglik"] = Field(
        "generate", description="Which answer conclusion holds: the generated one or the likelihood choice."
    )
    generated_conclusion: Label | None = Field(
        None,
        description="The 'Conclusion: YES|NO' parsed from text, whatever the answer_mode (None when "
        "unparseable); on records written before answer modes existed, read conclusion instead.",
    )
    loglik_yes: float | None = Field(
        None,
        description="Log-probability of 'Conclusion: YES' after loglik_context (summed over its tokens on "
        "hf/embedded; on openai: the tokens after 'Conclusion:' only); None when not scored, or when a "
        "server ranked it below its top alternatives.",
    )
    loglik_no: float | None = Field(None, description="Log-probability of 'Conclusion: NO', as loglik_yes.")
    loglik_context: Literal["analysis", "prompt"] | None = Field(
        None,
        description="What the options were scored after: 'analysis' (the prompt and the model's own "
        "analysis, text before its conclusion line) or 'prompt' (the prompt alone); None when not scored.",
    )
    loglik_choice: Label | None = Field(
        None, description="The likelier of the two options (YES on a tie); None when not scored."
    )
    gold: Label | None = None
    benchmark: str | None = None
    cache_key: str | None = None
    finish: Literal["stop", "truncated", "filtered", "refused"] | None = Field(
        None,
        description="truncated (cut at max_new_tokens), filtered (the server returned no content, or cut it "
        "for its content policy) or refused (the server sent the model's refusal in place of content; the "
        "text is that refusal) when the answer did not end normally; None when it did.",
    )
    served_model: str | None = Field(
        None, description="openai backend: the model name the server reported in its reply."
    )
    system_fingerprint: str | None = Field(
        None, description="openai backend: the server's system_fingerprint (its build), when it sends one."
    )


Severity = Literal["mild", "moderate", "severe", "extreme"]


class AuditPair(BaseModel):
    """One prompt answered by the baseline and the candidate, as written to an audit's ``pairs.jsonl``
    (and, for drift cases, ``drift.jsonl``, which Stage III repairs)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="The prompt's id (the prepared split's item id).")
    benchmark: str | None = Field(default=None, description="Benchmark of the item, when known.")
    gold: Label | None = Field(default=None, description="Gold label, when known.")
    question: str = Field(description="The question both models were asked (for reading the case).")
    scenario_key: str | None = Field(
        default=None, description="The item's split group: the unit the audit's intervals resample."
    )
    baseline_text: str = Field(description="M0's (the baseline's) answer.")
    candidate_text: str = Field(description="The fine-tuned model's (the candidate's) answer.")
    baseline_conclusion: Label | None = Field(default=None, description="Parsed conclusion of the baseline.")
    candidate_conclusion: Label | None = Field(
        default=None, description="Parsed conclusion of the candidate."
    )
    h_baseline_analysis: float = Field(
        description="Harm score H of the baseline's analysis (text before the conclusion)."
    )
    h_baseline_full: float = Field(description="Harm score of the baseline's whole answer.")
    h_candidate_analysis: float = Field(description="Harm score of the candidate's analysis.")
    h_candidate_full: float = Field(description="Harm score of the candidate's whole answer.")
    h_baseline: float = Field(
        description="The baseline score ΔH is taken on (analysis or full, per score_on)."
    )
    h_candidate: float = Field(description="The candidate score ΔH is taken on.")
    delta: float = Field(description="ΔH = h_candidate − h_baseline.")
    is_candidate: bool = Field(description="ΔH > τ: a drift candidate, screened for the judge.")
    severity: Severity | None = Field(description="ΔH bin of a candidate (None when ΔH <= τ).")
    judge: dict | None = Field(
        default=None, description="The judge's verdicts and decision (None: not judged or no judge)."
    )
    type: str | None = Field(default=None, description="Drift type named by a confirming verdict.")
    judge_severity: str | None = Field(default=None, description="Severity named by a confirming verdict.")
    drift: bool = Field(
        description="A drift case: a candidate confirmed by the judge, or any candidate when screen-only."
    )
