"""Secure transport: TLS identities pinned by on-chain fingerprints, signed requests."""
