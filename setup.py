"""Build hook for the optional native Merkle hasher (everything else is in pyproject.toml).

``nuclux._merkle`` needs a C compiler and OpenSSL's headers (``libssl-dev``); if it cannot be
built the install still succeeds and ``nuclux.core.merkle`` uses its Python code (slower, same
results)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "nuclux._merkle",
            ["src/nuclux/_merkle.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
