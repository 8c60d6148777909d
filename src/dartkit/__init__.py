"""dartkit: Distill-Audit-Repair Training for difference-aware, harm-drift-checked fine-tuning."""

__version__ = "0.1.0"
