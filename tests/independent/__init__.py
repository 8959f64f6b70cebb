"""A second implementation of qudag's signature checks, written from docs/protocol.md.

It imports nothing from ``qudag_node``: only the standard library, PyNaCl (Ed25519) and
``dilithium-py`` (a pure-Python ML-DSA), so a test that passes with it shows that the
node's signatures are what the protocol text says, not merely what the node accepts.
"""
