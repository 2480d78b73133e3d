"""Release 1 of the service, for tests that run it beside this one (a rolling upgrade) or
let it write a store that this release then opens (migrations).

tests/data/release1.tar.gz is `git archive` of monitor_manager/ and channels/ at the last
commit of release 1 (5a9ea8e), so the tests need no git history and no network.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

ARCHIVE = Path(__file__).parent / "data" / "release1.tar.gz"


def unpack_release1(into: Path) -> Path:
    """Release 1's code under `into`; the returned folder goes first on PYTHONPATH."""
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(into, filter="data")
    return into / "release1"
