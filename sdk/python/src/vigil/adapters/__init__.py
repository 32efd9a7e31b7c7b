"""Adapters for agent frameworks. None imports its framework at module load."""
