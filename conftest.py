"""The repository's pytest setup: tests/ holds helper modules beside the tests, and the
fixture modules among them load as plugins, so a test names a fixture without importing it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "tests"))

pytest_plugins = ["smtp_server", "fake_wecom", "fake_dingtalk", "fake_feishu"]
