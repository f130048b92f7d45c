"""dpn131: everything true of this model only (network.py, recipe.py); facts: docs/models/dpn131.md."""
