"""Message templates: Jinja2 files, English and Chinese built in, overridable from a directory.

Lookup order for `NAME` in language `LANG`: `DIR/LANG/NAME`, `DIR/NAME`, the built-in
`LANG/NAME`, the built-in `en/NAME`. Templates receive `message` (a `models.Message`) and
`max_alerts`, the number of alerts listed in full before the rest are only counted.

A daily report (message kind "report") is rendered by templates of its own whatever a channel
asks for: `report_subject.txt` for `subject.txt`, `report.html` for an HTML template,
`report.md` for a markdown one (`.md`) and `report.txt` for the rest, in the report's own
language (`message.extra["report"]["language"]`, `[report] language`). They receive `report`,
the figures (watch/report.py). Filters:
`time` (Unix seconds as wall time in `[templates] time_zone`, the zone named; an optional
strftime format whose `%Z` is the zone's name) and `duration` ("2d3h").
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jinja2

from monitor_manager.clock import TIME_FORMAT, format_time
from monitor_manager.durations import format_duration
from monitor_manager.models import Message, map_text

BUILTIN_DIR = Path(__file__).parent / "templates"
LANGUAGES = ("en", "zh")
# What one value may take of a message; the store, the API and the console keep it whole.
MAX_VALUE_CHARS = 1024
MAX_SUBJECT_CHARS = 200
_CUT_NOTE = {
    "en": " … [{n} more characters: see the console]",
    "zh": " …【另有 {n} 个字符，见控制台】",
}


class Renderer:
    def __init__(
        self,
        language: str = "en",
        directory: str | Path | None = None,
        max_alerts: int = 10,
        zone: dt.tzinfo | None = dt.UTC,
    ) -> None:
        """`zone` is the one every time is shown in: the config's `templates.zone` (None is
        the host's local zone); UTC when not given."""
        if language not in LANGUAGES:
            raise ValueError(f"unknown template language {language!r}")
        self.language = language
        self.max_alerts = max_alerts
        self.directory = directory
        self.zone = zone
        self._envs: dict[str, jinja2.Environment] = {}
        self.env = self._environment(language)

    def _environment(self, language: str) -> jinja2.Environment:
        """The templates of one language (a report may be in another than the messages)."""
        if language in self._envs:
            return self._envs[language]
        search: list[jinja2.BaseLoader] = []
        if self.directory:
            folder = Path(self.directory)
            search.append(jinja2.FileSystemLoader([folder / language, folder]))
        search.append(jinja2.FileSystemLoader([BUILTIN_DIR / language, BUILTIN_DIR / "en"]))
        env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(search),
            autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        env.filters["time"] = self._time
        env.filters["duration"] = lambda seconds: format_duration(seconds, units=2)
        self._envs[language] = env
        return env

    def _time(self, ts: float | None, fmt: str = TIME_FORMAT) -> str:
        # Release 1's templates wrote the zone as a literal "UTC" (`|time("%H:%M UTC")`); in
        # an override kept from then it names the configured zone, or the label would lie.
        return format_time(ts, self.zone, fmt.replace("UTC", "%Z"))

    def render(self, name: str, message: Message, **extra: object) -> str:
        """`name` rendered for `message`, whose label and annotation values are cut to
        MAX_VALUE_CHARS first (alert text is anyone's: it must not grow a page without end)."""
        if message.kind == "report":
            report = message.extra.get("report", {})
            language = report.get("language", self.language)
            env = self._environment(language if language in LANGUAGES else self.language)
            return env.get_template(report_template(name)).render(message=message, report=report)
        template = self.env.get_template(name)
        return template.render(message=self.bounded(message), max_alerts=self.max_alerts, **extra)

    def subject(self, message: Message) -> str:
        """`subject.txt` as one line of at most MAX_SUBJECT_CHARS."""
        line = " ".join(self.render("subject.txt", message).split())
        return line if len(line) <= MAX_SUBJECT_CHARS else line[: MAX_SUBJECT_CHARS - 1] + "…"

    def bounded(self, message: Message) -> Message:
        if not any(
            _long(a.labels)
            or _long(a.annotations)
            or _long(g.group_labels)
            or len(a.value) > MAX_VALUE_CHARS
            for g in message.groups
            for a in g.alerts
        ):
            return message  # the usual case: nothing to copy
        note = _CUT_NOTE[self.language]

        def cut(v: str) -> str:
            if len(v) <= MAX_VALUE_CHARS:
                return v
            return v[:MAX_VALUE_CHARS] + note.format(n=len(v) - MAX_VALUE_CHARS)

        return map_text(message, cut)

    def check(self) -> list[str]:
        """Compile every template this renderer can see; return the problems found."""
        problems = []
        for name in sorted(set(self.env.list_templates())):
            try:
                self.env.get_template(name)
            except jinja2.TemplateError as exc:
                problems.append(f"{name}: {exc}")
        return problems


def report_template(name: str) -> str:
    """The template that renders a daily report where a channel asks for `name`."""
    if name == "subject.txt":
        return "report_subject.txt"
    if name.endswith(".html"):
        return "report.html"
    return "report.md" if name.endswith(".md") else "report.txt"


def _long(values: dict[str, str]) -> bool:
    return any(len(k) > MAX_VALUE_CHARS or len(v) > MAX_VALUE_CHARS for k, v in values.items())
