"""m2det: everything true of this model only (network.py, recipe.py, head.py); facts: docs/models/m2det.md."""
