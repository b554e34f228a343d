"""The conversation with the upstream Hub (see client.py)."""
