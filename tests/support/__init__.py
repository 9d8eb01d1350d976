"""Helpers for end-to-end tests: real processes (control plane, e2b-local, git daemon, operator)."""
