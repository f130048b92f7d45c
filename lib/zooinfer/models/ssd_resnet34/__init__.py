"""ssd_resnet34: everything true of this model only (network.py, recipe.py, head.py); facts: docs/models/ssd_resnet34.md."""
