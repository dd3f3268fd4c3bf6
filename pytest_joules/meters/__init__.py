"""Meters read energy. Each module here is one meter; `base` holds the protocol."""
