"""Helpers the tests share, importable from any test directory (fixtures stay in conftest.py)."""
