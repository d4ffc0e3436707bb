"""Simulators: the market played many times over the pure core, to check its properties."""
