"""Message templates: Jinja2 files, English and Chinese built in, overridable from a directory.

Lookup order for `NAME` in language `LANG`: `DIR/LANG/NAME`, `DIR/NAME`, the built-in
`LANG/NAME`, the built-in `en/NAME`. Templates receive `message` (a `models.Message`) and
`max_alerts`, the number of alerts listed in full before the rest are only counted.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jinja2

from monitor_manager.models import Message

BUILTIN_DIR = Path(__file__).parent / "templates"
LANGUAGES = ("en", "zh")


def format_time(ts: float | None, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(fmt)


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n)
    return text if days or hours else f"{text}{secs}s"


class Renderer:
    def __init__(self, language: str = "en", directory: str | Path | None = None,
                 max_alerts: int = 10) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"unknown template language {language!r}")
        self.language = language
        self.max_alerts = max_alerts
        search: list[jinja2.BaseLoader] = []
        if directory:
            search.append(jinja2.FileSystemLoader([Path(directory) / language, Path(directory)]))
        search.append(jinja2.FileSystemLoader([BUILTIN_DIR / language, BUILTIN_DIR / "en"]))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(search),
            autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters["time"] = format_time
        self.env.filters["duration"] = format_duration

    def render(self, name: str, message: Message, **extra: object) -> str:
        template = self.env.get_template(name)
        return template.render(message=message, max_alerts=self.max_alerts, **extra)

    def check(self) -> list[str]:
        """Compile every template this renderer can see; return the problems found."""
        problems = []
        for name in sorted(set(self.env.list_templates())):
            try:
                self.env.get_template(name)
            except jinja2.TemplateError as exc:
                problems.append(f"{name}: {exc}")
        return problems
