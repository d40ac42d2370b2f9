"""``pdrelay audit verify``: check the audit log's hash chain."""

from __future__ import annotations

import argparse
import sys

from receiver.audit import verify_main

__all__ = ["verify"]


def verify(args: argparse.Namespace) -> int:
    return verify_main(args.files, sys.stdout, sys.stderr)
