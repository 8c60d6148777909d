"""External evaluation suites: open-ended transfer, HateCheck, BOLD, XSTest (``dartkit suite``)."""
