"""Leaf types and constants every layer may import: nothing here imports the rest of the package."""
