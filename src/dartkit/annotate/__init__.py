"""Human annotation of drift: a blinded A/B export of an audit, a local annotation page, and the
agreement of people with each other and with the automatic audit (screen, judge)."""
