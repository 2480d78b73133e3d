"""The benchmark's report: Markdown tables, every figure a median over the runs, with the
targets of the issue beside the figures they judge."""

from __future__ import annotations

from typing import Any

from benchkit import LoadResult, median, spread

RSS_LIMIT_MB = 200
P99_LIMIT_MS = 50.0
DELIVERY_TARGET = 200.0
STORM_SLACK_S = 10.0
RATIO_TARGETS = {1: 1.0, 100: 0.8}  # service / baseline (b), by alerts per payload
SCALE_TARGET = 0.8  # "within 20%"
HOSTILE_SLACK = 1.2  # the good client's p99 beside a malicious one: within 20% ("noise")
CONSOLE_P99_MS = 100.0  # every console page, on a store with 200,000 alerts
REPLAY_TARGET_S = 60.0  # a day of recorded traffic (100,000 payloads) replays within this
SECTIONS = (
    "Machine",
    "Load generator check",
    "Ingest",
    "Storm",
    "Delivery",
    "Scale",
    "Hostile client",
    "Console",
    "Replay",
    "Memory",
    "Targets",
)


def _n(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "–"
    return f"{value:,.{digits}f}"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _range(values: list[float], digits: int = 0) -> str:
    lo, hi = spread(values)
    return f"{_n(lo, digits)}–{_n(hi, digits)}" if len(values) > 1 else ""


def _cpu_us(result: LoadResult) -> float:
    """Server CPU time per alert, in microseconds."""
    return result.server_cpu / result.alerts_per_s * 1e6 if result.alerts_per_s else float("nan")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


class Report:
    def __init__(self, results: dict[str, Any]) -> None:
        self.r = results
        self.targets: list[list[str]] = []

    def target(self, what: str, figure: str, ok: bool) -> None:
        self.targets.append([what, figure, _met(ok)])

    def render(self) -> str:
        r = self.r
        plan = r["plan"]
        lines = [
            f"# Monitor Manager benchmark ({r['mode']})",
            "",
            f"Run {r['started']} in {r['elapsed'] / 60:.1f} min: `{r['command']}`. Every figure "
            f"is the median of {plan['reps']} runs (ingest and scale; {plan['storm_reps']} storm "
            f"runs, {plan['delivery_reps']} delivery runs), the range of the runs beside it; each "
            f"load lasts {plan['seconds']:g} s after a {plan['warmup']:g} s warm-up, "
            f"{plan['connections']} connections. Each run starts a fresh server on a fresh store.",
            "",
        ]
        lines += self.machine()
        lines += self.generator()
        lines += self.ingest()
        lines += self.storm()
        lines += self.delivery()
        lines += self.scale()
        lines += self.hostile()
        lines += self.console()
        lines += self.replay()
        lines += self.memory()
        lines += self.profile()
        lines += ["## Targets", ""]
        lines += (
            _table(["target", "measured", "met"], self.targets)
            if self.targets
            else ["No target was measured in this run.", ""]
        )
        return "\n".join(lines)

    # -- sections ----------------------------------------------------------------------------

    def machine(self) -> list[str]:
        rows = [[k, str(v)] for k, v in self.r["machine"].items()]
        rows.append(["load average at end", self.r.get("load_end", "?")])
        return ["## Machine", ""] + _table(["", ""], rows)

    def generator(self) -> list[str]:
        lines = ["## Load generator check", ""]
        gen = self.r.get("generator")
        if not gen:
            return lines + ["Not run.", ""]
        lines += [
            "wrk (1 thread, the same Lua script and connections as the ingest runs) against "
            "`bench/baselines.py trivial`, a server that frames requests and answers a canned "
            "200 without reading the body. The figures below are the generator's ceiling; the "
            "ingest runs stay far under it, and their wrk CPU column shows the headroom.",
            "",
        ]
        rows = []
        for row in gen:
            res: LoadResult = row["result"]
            rows.append(
                [
                    str(row["size"]),
                    _n(res.rps),
                    _n(res.alerts_per_s),
                    f"{res.generator_cpu:.0%}",
                    f"{res.server_cpu:.0%}",
                ]
            )
        lines += _table(["alerts/payload", "requests/s", "alerts/s", "wrk CPU", "server CPU"], rows)
        sink = self.r.get("sink")
        if sink:
            lines += [
                f"SMTP sink (`bench/smtp_sink.py`) fed by aiosmtplib over 2 reused connections "
                f"from the other core: {_n(sink['rate'])} mails/s ({sink['received']} of "
                f"{sink['mails']} received, {sink['connections']} connections, "
                f"{sink['bytes']:,} bytes each), the ceiling of the delivery figures below.",
                "",
            ]
        return lines

    def ingest(self) -> list[str]:
        lines = ["## Ingest", ""]
        data = self.r.get("ingest")
        if not data:
            return lines + ["Not run.", ""]
        lines += [
            "`POST /webhook/alertmanager` with every alert new (no duplicates), the alerts of a "
            "payload sharing an alertname (100 alert groups in turn), closed loop. (a) is a "
            "minimal aiohttp server that parses the JSON and answers 200; (b) adds a SQLite "
            "upsert of every alert in one transaction per request (WAL, synchronous=FULL, "
            "committed inline before the answer). The service runs with group_wait 1h, so "
            "nothing is delivered during ingest. CPU columns: cores' worth used during the "
            "load (1.00 = one core); 'other' is CPU used by processes outside the benchmark "
            "(another job on the machine shows there). 'server CPU µs/alert' is the server's "
            "CPU time divided by the alerts it took: the cost of an alert, which noise from "
            "other processes disturbs much less than the rate.",
            "",
        ]
        names = {
            "a": "(a) aiohttp + JSON",
            "b": "(b) + SQLite per request",
            "service": "Monitor Manager",
        }
        rows = []
        closed = data["closed"]
        for size in sorted(closed):
            for kind in ("a", "b", "service"):
                runs: list[LoadResult] = closed[size][kind]
                if not runs:
                    continue
                aps = [r.alerts_per_s for r in runs]
                rows.append(
                    [
                        str(size),
                        names[kind],
                        _n(median(aps)),
                        _range(aps),
                        _n(median(r.rps for r in runs)),
                        _n(median(r.p50_ms for r in runs), 1),
                        _n(median(r.p99_ms for r in runs), 1),
                        _n(median(_cpu_us(r) for r in runs), 1),
                        f"{median(r.server_cpu for r in runs):.2f}",
                        f"{median(r.generator_cpu for r in runs):.2f}",
                        f"{median(r.other_cpu for r in runs):.2f}",
                        str(sum(r.errors for r in runs)),
                    ]
                )
        lines += _table(
            [
                "alerts/payload",
                "server",
                "alerts/s",
                "range",
                "requests/s",
                "p50 ms",
                "p99 ms",
                "server CPU µs/alert",
                "server CPU",
                "wrk CPU",
                "other CPU",
                "errors",
            ],
            rows,
        )
        ratio_rows = []
        for size in sorted(closed):
            ours = median(r.alerts_per_s for r in closed[size]["service"])
            a = median(r.alerts_per_s for r in closed[size]["a"])
            b = median(r.alerts_per_s for r in closed[size]["b"])
            target = RATIO_TARGETS.get(size)
            ratio_b = ours / b if b else float("nan")
            ratio_rows.append(
                [
                    str(size),
                    f"{ours / a:.2f}×" if a else "–",
                    f"{ratio_b:.2f}×",
                    f"≥ {target:.1f}× (b)" if target else "–",
                    _met(ratio_b >= target) if target else "–",
                ]
            )
            if target:
                self.target(
                    f"ingest at {size} alert{'s' if size > 1 else ''}/payload ≥ "
                    f"{target:.1f}× baseline (b)",
                    f"{ratio_b:.2f}× ({_n(ours)} vs {_n(b)} alerts/s)",
                    ratio_b >= target,
                )
        lines += _table(
            ["alerts/payload", "service / (a)", "service / (b)", "target", "met"], ratio_rows
        )
        lines += [
            "### Latency at half the maximum rate",
            "",
            "The service alone, paced by `bench/wrk/webhook_paced.lua` at half the median "
            "closed-loop request rate above (fixed schedule, no catch-up; wrk measures each "
            "request from when it is written).",
            "",
        ]
        rows = []
        for size in sorted(data["paced"]):
            runs = data["paced"][size]
            if not runs:
                continue
            p99 = median(r.p99_ms for r in runs)
            rows.append(
                [
                    str(size),
                    _n(data["paced_rate"][size]),
                    _n(median(r.rps for r in runs)),
                    _n(median(r.alerts_per_s for r in runs)),
                    _n(median(r.p50_ms for r in runs), 1),
                    _n(p99, 1),
                    _range([r.p99_ms for r in runs], 1),
                    _n(median(r.max_ms for r in runs), 1),
                    _met(p99 <= P99_LIMIT_MS),
                ]
            )
            self.target(
                f"p99 ≤ {P99_LIMIT_MS:g} ms at half the maximum rate, {size}/payload",
                f"{p99:.1f} ms",
                p99 <= P99_LIMIT_MS,
            )
        lines += _table(
            [
                "alerts/payload",
                "paced at req/s",
                "achieved req/s",
                "alerts/s",
                "p50 ms",
                "p99 ms",
                "p99 range",
                "max ms",
                "p99 ≤ 50 ms",
            ],
            rows,
        )
        return lines

    def storm(self) -> list[str]:
        lines = ["## Storm", ""]
        runs = self.r.get("storm")
        if not runs:
            return lines + ["Not run.", ""]
        plan = self.r["plan"]
        per_group = plan["storm_alerts"] // plan["storm_groups"]
        gw = plan["storm_group_wait"]
        limit = plan["storm_threshold"] + 1
        lines += [
            f"{plan['storm_alerts']:,} distinct alerts in {plan['storm_groups']:,} alert groups "
            f"({per_group} alerts each, one payload per group as Alertmanager sends them), "
            f"routed by a `team` label to {plan['storm_contact_groups']} contact groups with one "
            f"email channel to the local SMTP sink; posted with 16 concurrent requests as fast "
            f"as the service answers, then all resolved the same way once the firing messages "
            f"were delivered. Settings: group_wait = group_interval = {gw:g}s, storm threshold "
            f"{plan['storm_threshold']}, window {plan['storm_window']:g}s. 'lag' is the time "
            "from the last POST's answer to the last mail at the sink. A digest is due at the "
            "end of its window, so when the posting is quick the lag is about group_wait + "
            "window for the firing phase and about one window for the resolved phase (with the "
            "default 1m window it would be a minute, by design); 'last decision → last mail' "
            "is the part that is the service's own work: from the last notification decided "
            "(its `created_at`) to its mail at the sink. The windows are rebuilt from "
            "`/api/v1/notifications`.",
            "",
        ]
        rows = []
        for phase in ("firing", "resolved"):
            ph = [run[phase] for run in runs]
            lag = median(p["lag"] for p in ph)
            complete = min(p["complete"] for p in ph)
            rows.append(
                [
                    phase,
                    _n(median(p["alerts_per_s"] for p in ph)),
                    _n(median(p["post_seconds"] for p in ph), 1),
                    _n(lag, 1),
                    _range([p["lag"] for p in ph], 1),
                    _n(median(p["after_decision"] for p in ph), 2),
                    _n(median(p["mails"] for p in ph)),
                    _n(median(p["digests"] for p in ph)),
                    f"{complete}/{ph[0]['groups']}",
                    str(sum(p["post_failures"] for p in ph)),
                ]
            )
            self.target(
                f"storm ({phase}): last mail ≤ group_wait + {STORM_SLACK_S:g} s after "
                "the last POST",
                f"{lag:.1f} s (group_wait {gw:g} s)",
                lag <= gw + STORM_SLACK_S,
            )
            self.target(
                f"storm ({phase}): every alert group in a delivered message",
                f"{complete}/{ph[0]['groups']}",
                complete == ph[0]["groups"],
            )
        lines += _table(
            [
                "phase",
                "posted alerts/s",
                "posting s",
                "lag s",
                "lag range",
                "last decision → last mail s",
                "mails",
                "digests",
                "groups in mails",
                "failed POSTs",
            ],
            rows,
        )
        most = max(run["max_per_window"] for run in runs)
        most_direct = max(run["max_direct_per_window"] for run in runs)
        most_digests = max(run["max_digests_per_window"] for run in runs)
        undelivered = sum(run["undelivered"] for run in runs)
        per_cg = ", ".join(
            f"{address.split('@')[0]} {count}"
            for address, count in sorted(runs[0]["mails_per_contact_group"].items())
        )
        lines += [
            f"Most messages one contact group got in one window on its one channel: {most} "
            f"({most_direct} direct + {most_digests} digest); limit threshold + 1 = {limit}. "
            f"Deliveries not delivered at the end: {undelivered}. Mails per contact group "
            f"(first run): {per_cg}.",
            "",
        ]
        self.target(
            "storm: ≤ threshold + one digest per channel per window",
            f"{most} ≤ {limit}",
            most <= limit,
        )
        return lines

    def delivery(self) -> list[str]:
        lines = ["## Delivery", ""]
        runs = self.r.get("delivery")
        if not runs:
            return lines + ["Not run.", ""]
        rate = median(run["rate"] for run in runs)
        lines += [
            f"{runs[0]['mails']:,} alert groups flushed at once (group_wait 1s, storm control "
            "out of the way) to one contact group with one email channel (tls none, the "
            "default pool of 2 connections) to the local SMTP sink. Rate = mails between the "
            "first and the last arrival at the sink.",
            "",
        ]
        rows = [
            [
                str(run["received"]),
                _n(run["seconds"], 2),
                _n(run["rate"]),
                str(run["connections"]),
                _n(run["mean_bytes"]),
            ]
            for run in runs
        ]
        lines += _table(
            ["mails received", "seconds", "mails/s", "SMTP connections opened", "bytes/mail"], rows
        )
        lines += [f"Median: **{_n(rate)} mails/s** (target ≥ {DELIVERY_TARGET:g}/s).", ""]
        conns = max(run["connections"] for run in runs)
        self.target(
            f"delivery ≥ {DELIVERY_TARGET:g} emails/s, connections reused",
            f"{rate:.0f}/s over {conns} connections",
            rate >= DELIVERY_TARGET and conns <= 4,
        )
        return lines

    def scale(self) -> list[str]:
        lines = ["## Scale", ""]
        data = self.r.get("scale")
        if not data:
            return lines + ["Not run.", ""]
        pre = data["prepopulate"]
        lines += [
            f"The store is first filled through the API: {pre['alerts']:,} firing alerts in "
            f"{pre['seconds']:.1f} s (100 per payload, 1,000 alert groups; store file "
            f"{pre['db_bytes'] / 2**20:.0f} MB; service RSS then {pre['rss_kb'] / 1024:.0f} MB). "
            "Each 'stored' run starts the service on a copy of that store; each 'empty' run on a "
            "new one; the two alternate. Start-up (to /healthz) took "
            f"{median(data['startup']['empty']):.1f} s empty and "
            f"{median(data['startup']['stored']):.1f} s with the stored alerts.",
            "",
        ]
        rows = []
        for size in sorted(data["results"]["empty"]):
            empty = data["results"]["empty"][size]
            stored = data["results"]["stored"][size]
            e = median(r.alerts_per_s for r in empty)
            s = median(r.alerts_per_s for r in stored)
            ratio = s / e if e else float("nan")
            rows.append(
                [
                    str(size),
                    _n(e),
                    _n(s),
                    f"{ratio:.2f}×",
                    _n(median(_cpu_us(r) for r in empty), 1),
                    _n(median(_cpu_us(r) for r in stored), 1),
                    _n(median(r.p99_ms for r in empty), 1),
                    _n(median(r.p99_ms for r in stored), 1),
                    _met(ratio >= SCALE_TARGET),
                ]
            )
            self.target(
                f"ingest with {pre['alerts']:,} stored within 20% of empty, {size}/payload",
                f"{ratio:.2f}×",
                ratio >= SCALE_TARGET,
            )
        lines += _table(
            [
                "alerts/payload",
                "empty: alerts/s",
                "stored: alerts/s",
                "stored / empty",
                "CPU µs/alert empty",
                "CPU µs/alert stored",
                "p99 ms empty",
                "p99 ms stored",
                "≥ 0.8×",
            ],
            rows,
        )
        return lines

    def hostile(self) -> list[str]:
        lines = ["## Hostile client", ""]
        data = self.r.get("hostile")
        if not data:
            return lines + ["Not run.", ""]
        quiet, bad = data["runs"]["quiet"], data["runs"]["hostile"]
        p_quiet = median(r.p99_ms for r in quiet)
        p_bad = median(r.p99_ms for r in bad)
        ratio = p_bad / p_quiet if p_quiet else float("nan")
        kinds: dict[str, int] = {}
        for counts in data["bad"]:
            for status, n in counts.items():
                kinds[status] = kinds.get(status, 0) + n
        lost = [
            stored != r.requests
            for stored, r in zip(
                data["stored"]["quiet"] + data["stored"]["hostile"], quiet + bad, strict=True
            )
        ]
        errors = sum(r.errors for r in quiet + bad)
        lines += [
            f"A good client (wrk, 1 alert per payload, paced at {data['rate']:g} requests/s) "
            "alone, and beside a malicious one (bench/hostile_client.py, 8 at a time: UTF-16/32, "
            "lone surrogates, broken gzip, deep nesting, bodies over the limit, bodies that "
            "stall). The malicious requests were answered: "
            + ", ".join(f"{k}: {v:,}" for k, v in sorted(kinds.items()))
            + ".",
            "",
        ]
        lines += _table(
            [
                "",
                "p50 ms",
                "p99 ms",
                "good requests answered",
                "good errors",
                "their alerts stored",
            ],
            [
                [
                    name,
                    _n(median(r.p50_ms for r in runs), 1),
                    _n(median(r.p99_ms for r in runs), 1),
                    _n(median(r.requests for r in runs)),
                    str(sum(r.errors for r in runs)),
                    _n(median(data["stored"][name])),
                ]
                for name, runs in (("quiet", quiet), ("hostile", bad))
            ],
        )
        self.target(
            "good client's p99 beside a malicious one within 20% of alone",
            f"{ratio:.2f}× ({p_bad:.1f} / {p_quiet:.1f} ms)",
            ratio <= HOSTILE_SLACK,
        )
        self.target(
            "every good request answered 200 and stored, with a malicious client",
            f"{errors} errors",
            errors == 0 and not any(lost),
        )
        return lines

    def console(self) -> list[str]:
        lines = ["## Console", ""]
        data = self.r.get("console")
        if not data:
            return lines + ["Not run.", ""]
        fill = data["fill"]
        fetches = data["pages"][0]["fetches"] if data["pages"] else 0
        lines += [
            f"Each page of the console fetched {fetches} times, one request at a time after two "
            f"warm-up requests, on a store filled through the API with {fill['alerts']:,} firing "
            f"alerts in {fill['groups']:,} open alert groups over 5 contact groups "
            f"({fill['seconds']:.0f} s to fill and settle; {fill['db_bytes'] / 2**20:.0f} MB "
            f"with its WAL). Each group was notified once through two channels: a console "
            f"channel (delivered) and an email channel to a port where nothing listens "
            f"(retrying), so there are {fill['notifications']:,} notifications and "
            f"{fill['failing']:,} failing deliveries, all listed first on the notifications "
            "page. The console is open (loopback, no users): a login only adds a dictionary "
            "lookup. Latency is from the client: request written to body read.",
            "",
        ]
        rows = []
        worst = 0.0
        for page in data["pages"]:
            ok = set(page["statuses"]) == {200}
            worst = max(worst, page["p99_ms"])
            rows.append(
                [
                    page["page"],
                    f"`{page['path']}`",
                    _n(page["p50_ms"], 1),
                    _n(page["p99_ms"], 1),
                    _n(page["max_ms"], 1),
                    _n(page["kb"]),
                    _met(ok and page["p99_ms"] <= CONSOLE_P99_MS),
                ]
            )
        lines += _table(
            ["page", "path", "p50 ms", "p99 ms", "max ms", "kB", f"≤ {CONSOLE_P99_MS:g} ms"], rows
        )
        if "rss_kb" in fill:
            lines += [
                f"Memory of the service: {fill['rss_kb'] / 1024:.0f} MB resident before the "
                f"pages were fetched, {fill['rss_after_pages_kb'] / 1024:.0f} MB after; peak "
                f"{fill['hwm_kb'] / 1024:.0f} MB before and "
                f"{fill['hwm_after_pages_kb'] / 1024:.0f} MB after (the peak comes from "
                f"filling: {fill['groups']:,} groups of {fill['alerts'] // fill['groups']} "
                "alerts flushed into messages at once).",
                "",
            ]
        if data["pages"] and fill["alerts"] >= 200_000:
            self.target(
                f"every console page p99 ≤ {CONSOLE_P99_MS:g} ms with {fill['alerts']:,} "
                f"alerts and {fill['groups']:,} open groups",
                f"{worst:.1f} ms (worst page)",
                worst <= CONSOLE_P99_MS,
            )
        return lines

    def replay(self) -> list[str]:
        lines = ["## Replay", ""]
        data = self.r.get("replay")
        if not data:
            return lines + ["Not run.", ""]
        traffic, runs = data["traffic"], data["runs"]
        lines += [
            f"`monitor-manager replay --summary` of a recording written by `bench/recording.py`: "
            f"{traffic['payloads']:,} payloads ({traffic['alerts']:,} alerts, "
            f"{traffic['bytes'] / 2**20:.0f} MB) over {traffic['hours']:.0f} hours, from "
            f"{traffic['incidents']:,} incidents (flapping alert groups of 1 to 30 alerts, a few "
            "names far noisier than the rest) sent by two Alertmanagers, and a heartbeat; "
            "5 contact groups, group_wait 30s, group_interval 5m, storm threshold 20 a minute. "
            "Run as a command on the server's core; wall time from start to exit, CPU time and "
            "peak RSS of the process (wait4).",
            "",
        ]
        seconds = [r["seconds"] for r in runs]
        cpu = [r["cpu_seconds"] for r in runs]
        rows = [
            [
                _n(median(seconds), 1),
                _range(seconds, 1),
                _n(traffic["payloads"] / median(seconds)),
                _n(median(cpu), 1),
                _n(traffic["payloads"] / median(cpu)),
                _n(max(r["peak_rss_kb"] for r in runs) / 1024),
                _n(runs[0]["messages"]),
                _n(runs[0]["busiest_hour"]),
            ]
        ]
        lines += _table(
            [
                "wall s",
                "range",
                "payloads/s",
                "CPU s",
                "payloads per CPU s",
                "peak RSS MB",
                "messages",
                "busiest hour",
            ],
            rows,
        )
        if traffic["payloads"] >= 100_000:
            self.target(
                f"a day of recorded traffic ({traffic['payloads']:,} payloads) replays in "
                f"under {REPLAY_TARGET_S:g} s",
                f"{median(seconds):.1f} s ({median(cpu):.1f} s CPU)",
                median(seconds) < REPLAY_TARGET_S,
            )
        return lines

    def memory(self) -> list[str]:
        lines = [
            "## Memory",
            "",
            "Peak RSS (VmHWM from /proc/PID/status, read before each service process "
            "stopped) of the service, the largest over the runs of each scenario.",
            "",
        ]
        memory = self.r.get("memory") or {}
        if not memory:
            return lines + ["Not run.", ""]
        rows = [
            [label, _n(kb / 1024), _met(kb / 1024 <= RSS_LIMIT_MB)] for label, kb in memory.items()
        ]
        lines += _table(["scenario", "peak RSS MB", f"≤ {RSS_LIMIT_MB} MB"], rows)
        worst_label, worst = max(memory.items(), key=lambda item: item[1])
        self.target(
            f"peak RSS ≤ {RSS_LIMIT_MB} MB throughout",
            f"{worst / 1024:.0f} MB ({worst_label})",
            worst / 1024 <= RSS_LIMIT_MB,
        )
        return lines

    def profile(self) -> list[str]:
        prof = self.r.get("profile")
        if not prof:
            return []
        lines = [
            "## Profile",
            "",
            "py-spy record (200 Hz, all threads, idle excluded as far as py-spy can tell: "
            "a thread blocked in fsync or waiting for the GIL still counts) on the service "
            "under the closed-loop ingest load. Percentages are of all samples; the second "
            "table lists the project's own functions with everything they call.",
            "",
        ]
        for size, data in sorted(prof.items()):
            total = data["samples"] or 1
            lines += [
                f"### {size} alert{'s' if int(size) > 1 else ''} per payload "
                f"({data['samples']} samples, `{data['file']}`)",
                "",
            ]
            threads = ", ".join(f"{t}: {c / total:.0%}" for t, c in data["threads"])
            lines += [f"Threads: {threads}.", ""]
            lines += _table(
                ["self %", "function"], [[f"{c / total:.1%}", f"`{f}`"] for f, c in data["self"]]
            )
            # The project's own functions; the event loop and thread frames above them say
            # nothing.
            interesting = [
                (f, c)
                for f, c in data["inclusive"]
                if ("monitor_manager/" in f or "channels/" in f)
                and not f.endswith(("cli.py)", "__main__.py)"))
            ][:20]
            lines += _table(
                ["inclusive %", "function"],
                [[f"{c / total:.1%}", f"`{f}`"] for f, c in interesting],
            )
        return lines


def render(results: dict[str, Any]) -> str:
    return Report(results).render()
