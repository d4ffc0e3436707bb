"""The pure core of Nuclux: values in, values out.

Nothing here performs I/O or reads hidden time or randomness (a test enforces the imports).
"""
