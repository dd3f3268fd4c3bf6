"""Engines generate tokens. Each module here is one engine; `base` holds the protocol."""
