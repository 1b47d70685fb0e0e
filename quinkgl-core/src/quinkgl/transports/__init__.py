"""Transports that ship with core (the in-process ``memory`` transport)."""
