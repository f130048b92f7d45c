"""pyramidbox: everything true of this model only (network.py, recipe.py, head.py); facts: docs/models/pyramidbox.md."""
