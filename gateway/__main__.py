"""
C{python -m gateway}: the command-line tool (see L{gateway.cli}).
"""

from __future__ import annotations

import sys

from gateway.cli import main

sys.exit(main())
