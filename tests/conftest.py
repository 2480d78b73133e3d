"""Shared fixtures. Helper modules (smtp_server, fake_wecom, ...) live beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
