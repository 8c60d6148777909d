"""Statistics shared by every stage: evaluation metrics (``metrics``) and intervals and paired tests (``inference``)."""
