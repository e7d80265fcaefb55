"""Thin servicers: decode and validate -> core (on trio) -> encode."""
