"""Sharing a run's outputs with the Hugging Face ecosystem.

- :mod:`dartkit.share.hub`: one commit of files to a Hub repository (token, repo, branch, errors).
- :mod:`dartkit.share.push`: ``dartkit push RUN --to ORG/NAME``: an adapter with its PEFT model card
  front matter (``library_name: peft``, ``base_model``) and the run's summary.
- :mod:`dartkit.share.export_data`: ``dartkit export-data RUN --out DIR``: the distillation and
  repair training rows as ``datasets`` datasets in TRL's formats, with their loss weights.
"""
