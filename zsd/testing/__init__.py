"""Test and development harnesses shipped as real code."""
