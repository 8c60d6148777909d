"""Human annotation of drift: a blinded A/B export of an audit, a local annotation page, and the
agreement of people with each other and with the automatic audit (screen, judge).

The names below tie the three commands' files together (see docs/annotation.md).
"""

#: ``kind`` of an export's ``manifest.json``, of the key beside it, and of ``agreement.json``.
KIND_EXPORT = "dartkit-annotation-export"
KIND_KEY = "dartkit-annotation-key"
KIND_AGREEMENT = "dartkit-annotation-agreement"
#: The page's answers, inside the export directory.
STORE_NAME = "annotations.sqlite"
#: The agreement result, inside the export directory by default.
RESULT_NAME = "agreement.json"
