"""Stage II: the paired harm-drift audit (inputs, scoring and decisions, the blinded judge, audit.md).

The stage itself (``dartkit audit``) is :func:`dartkit.stages.audit.run`.
"""

from dartkit.audit.core import SEVERITIES, judge_decision, severity_of, summarize, tau_sweep
from dartkit.audit.judge import Verdict, VerdictError, candidate_is_b, parse_verdict

__all__ = [
    "SEVERITIES",
    "Verdict",
    "VerdictError",
    "candidate_is_b",
    "judge_decision",
    "parse_verdict",
    "severity_of",
    "summarize",
    "tau_sweep",
]
