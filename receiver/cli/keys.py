"""``pdrelay keygen``: print a new encryption key for ``security.encryption_key``."""

from __future__ import annotations

import argparse

from receiver.crypto import generate_key

__all__ = ["keygen"]


def keygen(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0
