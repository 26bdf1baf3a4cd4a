#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Boot one VM and vmstate-bridged (tests/harness/vmstest/wholepath.py) for poking at by hand:

    python3 tests/system/wholepath.py --image DIR --builddir BUILDDIR [--workdir DIR]

Ctrl-C stops everything."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
from vmstest.wholepath import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
