"""Plots the notebooks show (one module per task)."""
