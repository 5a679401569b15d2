"""Helpers for deepyard's own tests and benchmarks (real parts, started on this machine)."""
