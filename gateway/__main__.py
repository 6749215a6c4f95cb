"""
C{python -m gateway}: the command-line tool (see L{gateway.cli.main}).
"""

from __future__ import annotations

import sys

from gateway.cli.main import main

sys.exit(main())
