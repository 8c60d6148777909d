"""The suites dartkit knows, by name: adding a suite is adding its module's ``SUITE`` here."""

from __future__ import annotations

from dartkit.config import ConfigError
from dartkit.suites import bold, hatecheck, transfer, xstest
from dartkit.suites.base import Suite

SUITES: dict[str, Suite] = {s.name: s for s in (transfer.SUITE, hatecheck.SUITE, bold.SUITE, xstest.SUITE)}


def get_suite(name: str) -> Suite:
    """The suite called ``name``.

    Raises:
        ConfigError: no such suite (the message lists the known ones).
    """
    try:
        return SUITES[name]
    except KeyError:
        raise ConfigError(f"unknown suite {name!r} (known: {', '.join(SUITES)})") from None
