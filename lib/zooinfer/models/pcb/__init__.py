"""pcb: everything true of this model only (network.py, recipe.py); facts: docs/models/pcb.md."""
