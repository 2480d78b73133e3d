"""Command line: `serve`, `check-config`, `reload`, `send-test`, `route-test`, `replay`,
`hash-password`. Parses arguments and runs; nothing else."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import ssl
import sys
import time
import tomllib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from monitor_manager import __version__
from monitor_manager.config import (
    Config,
    ConfigError,
    RouteConfig,
    ServerConfig,
    config_warnings,
    default_config,
    load_config,
    parse_config,
    serve_anyway_problems,
    split_listen,
)
from monitor_manager.config import summary as config_summary
from monitor_manager.ingest.payload import LABEL_NAME
from monitor_manager.models import Message
from monitor_manager.web.bodies import SERVER_ARGS

if TYPE_CHECKING:
    from monitor_manager.converge.routing import NotRouted

log = logging.getLogger("monitor_manager")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="monitor-manager", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--config", help="TOML config file (default: embedded defaults)")
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("--config", required=True)
    reload = sub.add_parser(
        "reload",
        help="ask the running service to read its config file again (POST /-/reload)",
    )
    reload.add_argument(
        "--config",
        help="the config that says where the service listens and its api_token "
        "(default: the embedded defaults, 127.0.0.1:9095)",
    )
    test = sub.add_parser("send-test", help="send a test notification to a contact group")
    test.add_argument("--config", required=True)
    test.add_argument("--group", required=True, help="contact group name")
    route = sub.add_parser(
        "route-test",
        help="show the contact groups and channels an alert with these labels reaches, and why",
    )
    route.add_argument("--config", required=True)
    route.add_argument("--format", choices=["text", "json"], default="text")
    route.add_argument("labels", nargs="+", metavar="LABEL=VALUE")
    rp = sub.add_parser(
        "replay",
        help="run a recording of webhook payloads ([server] record) through the config on a "
        "virtual clock and print the messages it would have sent, sending nothing",
    )
    rp.add_argument("--config", required=True)
    rp.add_argument("--format", choices=["text", "json"], default="text")
    rp.add_argument(
        "--summary", action="store_true", help="counts per contact group and per hour instead"
    )
    rp.add_argument(
        "--watchdog",
        action="store_true",
        help="page HeartbeatMissing where the recording's heartbeats stop (default: heartbeat "
        "alerts are only taken out of the stream)",
    )
    rp.add_argument(
        "files", nargs="+", metavar="FILE", help="recordings, oldest first (PATH.1 before PATH)"
    )
    sub.add_parser(
        "hash-password",
        help="print the scrypt hash of a console password (asked for, or one line on stdin)",
    )
    args = parser.parse_args(argv)
    if args.command == "route-test":
        try:
            labels = parse_labels(args.labels)
        except ValueError as exc:
            route.error(str(exc))  # exit 2, as for any other bad argument
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "hash-password":
        return hash_password_command()
    if args.command == "reload":
        return reload_command(args.config)
    try:
        config = load_config(args.config) if args.config else default_config()
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 1
    if args.command == "serve":
        # Absolute: the reload answer and the audit name the file wherever they are read.
        return serve_forever(config, os.path.abspath(args.config) if args.config else None)
    if args.command == "route-test":
        print(route_test(config, labels, args.format))
        return 0
    if args.command == "replay":
        return asyncio.run(replay_command(config, args))
    return asyncio.run(send_test(config, args.group))


def check_config(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 1
    for warning in config_warnings(config):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    problems = serve_anyway_problems(config)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(config_summary(config))
    return 0


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """`LABEL=VALUE` arguments as a label set; ValueError saying which one is wrong."""
    labels: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals:
            raise ValueError(f"{item!r} is not LABEL=VALUE (e.g. severity=critical)")
        if not LABEL_NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a valid label name (letters, digits and _, not first a digit)"
            )
        if name in labels:
            raise ValueError(f"label {name!r} is given twice")
        labels[name] = value
    return labels


def route_test(config: Config, labels: dict[str, str], fmt: str = "text") -> str:
    """What `route-test` prints: where an alert with `labels` goes and why, as
    `amtool config routes test` does; `fmt` "json" for scripts."""
    from monitor_manager.converge.routing import explain, not_routed

    matches = explain(config, labels)
    skipped = not_routed(config, labels)
    if fmt == "json":
        return json.dumps(
            {
                "contact_groups": [
                    {"name": m.name, "channels": list(m.channels), "route": m.route}
                    for m in matches
                ],
                "not_routed": None if skipped is None else dataclasses.asdict(skipped),
            },
            ensure_ascii=False,
        )
    if skipped is not None:
        return f"no contact group: {_not_routed_text(config, skipped)}"
    lines = []
    for m in matches:
        channels = ", ".join(m.channels) or "no channels (recorded, sent nowhere)"
        lines.append(f"{m.name}: {channels}")
        if m.route == "default":
            lines.append("  routing.default_groups: no route matched")
        else:
            route = config.routes[m.route]
            also = "; continue = true: later routes tried too" if route.continue_ else ""
            lines.append(f"  routes[{m.route}] matched {_matchers(route)}{also}")
    return "\n".join(lines)


def _matchers(route: RouteConfig) -> str:
    """A route's matchers as Alertmanager writes them: `{team="db", severity=~"page"}`."""
    exact = [
        f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in route.match.items()
    ]
    regex = [
        f"{name}=~{json.dumps(value, ensure_ascii=False)}" for name, value in route.match_re.items()
    ]
    return "{" + ", ".join(exact + regex) + "}"


def _not_routed_text(config: Config, why: NotRouted) -> str:
    if why.reason == "internal":
        return (
            'source="monitor-manager" marks Monitor Manager\'s own alerts; the webhook drops '
            "an alert from outside that claims to be one (counted as rejected)"
        )
    beat = next(b for b in config.watchdog.heartbeats if b.name == why.heartbeat)
    shown = ", ".join(
        f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in beat.match.items()
    )
    return (
        f'these labels match heartbeat "{beat.name}" ([[watchdog.heartbeats]] match {{{shown}}}): '
        "a firing alert records that the heartbeat arrived, and is never routed or notified"
    )


async def replay_command(config: Config, args: argparse.Namespace) -> int:
    """`replay`: the messages on stdout (or their summary); what was read, on stderr."""
    from monitor_manager import replay

    for path in args.files:
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            print(f"{path}: cannot read the recording", file=sys.stderr)
            return 2
    started = time.monotonic()
    skipped: list[str] = []
    result = await replay.replay(
        config,
        replay.read_recording(args.files, skipped),
        watchdog=args.watchdog,
        details=not args.summary,
    )
    zone = config.templates.zone
    lines = (
        replay.format_summary(result, zone, args.format)
        if args.summary
        else replay.format_messages(result, zone, args.format)
    )
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    for problem in skipped[:MAX_PROBLEMS_SHOWN]:
        print(f"skipped {problem}", file=sys.stderr)
    if len(skipped) > MAX_PROBLEMS_SHOWN:
        print(f"... {len(skipped) - MAX_PROBLEMS_SHOWN} more lines skipped", file=sys.stderr)
    print(
        f"replayed {result.payloads} payloads ({result.alerts} alerts"
        f"{f', {len(skipped)} lines skipped' if skipped else ''}) in "
        f"{time.monotonic() - started:.1f}s: {len(result.messages)} messages would have been sent",
        file=sys.stderr,
    )
    return 0


MAX_PROBLEMS_SHOWN = 20


def serve_forever(config: Config, config_path: str | None = None) -> int:
    from monitor_manager import keys
    from monitor_manager.app import create_app

    host, port = split_listen(config.server.listen)
    app = create_app(config, config_path=config_path)
    for problem in serve_anyway_problems(config):
        log.error("CONFIG PROBLEM, running degraded: %s", problem)
    log.info(
        "monitor-manager %s (instance %s) listening on %s, store %s",
        __version__,
        config.server.instance,
        config.server.listen,
        config.storage.path,
    )
    # run_app stops on SIGTERM and SIGINT: it closes the listener, lets in-flight requests
    # finish within shutdown_timeout, then runs the cleanup contexts in reverse order.
    app.on_startup.append(_reload_on_sighup)
    app.on_shutdown.append(_exit_on_second_signal)
    loop = new_event_loop()
    log.info("event loop: %s", type(loop).__module__.split(".")[0])
    web.run_app(
        app,
        loop=loop,
        host=host,
        port=int(port),
        shutdown_timeout=10.0,
        print=None,
        access_log=None,
        handle_signals=True,
        ssl_context=tls.context if (tls := app[keys.TLS]) else None,
        # Handler arguments go to run_app itself: given as `handler_args`, aiohttp failed to
        # build the handler with them, fell back to its defaults (decompressing bodies itself,
        # so a gzip webhook was then refused as not gzip) and logged it for every connection.
        **SERVER_ARGS,
    )
    return 0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed: a webhook of one alert spends much of its time in the
    event loop and the transport, which uvloop runs in C (bench/README.md). asyncio's own
    loop where uvloop cannot install, or with MONITOR_MANAGER_EVENT_LOOP=asyncio."""
    if os.environ.get("MONITOR_MANAGER_EVENT_LOOP", "") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def _exit_on_second_signal(app: web.Application) -> None:
    """A clean stop waits for in-flight requests and sends (up to about 20 s); a second SIGTERM
    or Ctrl-C ends it at once. That loses nothing, as after kill -9: every accepted alert is
    already committed, and a send cut short stays in the outbox for the next start."""
    loop = asyncio.get_running_loop()

    def exit_now(name: str) -> None:
        log.warning(
            "second %s during shutdown: exiting now; unsent notifications stay in the outbox", name
        )
        logging.shutdown()
        os._exit(1)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, exit_now, sig.name)


async def _reload_on_sighup(app: web.Application) -> None:
    """SIGHUP (systemd's ExecReload) reads the config file again; the outcome goes to the log
    and the audit."""
    from monitor_manager import keys

    reloader = app[keys.RELOADER]
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.spawn, "signal", "SIGHUP")


def reload_command(path: str | None) -> int:
    """`monitor-manager reload`: POST /-/reload to the service this config describes (its
    listen address, http or https, its api_token) and print the answer."""
    import getpass
    import urllib.error
    import urllib.request

    from monitor_manager.reload import CLI_AGENT, RELOAD_PATH

    try:
        service = _service_of(path)
    except ConfigError as exc:
        print("cannot tell where the service listens:", file=sys.stderr)
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 1
    server = service.server
    url = _local_url(server) + RELOAD_PATH + "?" + urllib.parse.urlencode({"by": _user(getpass)})
    request = urllib.request.Request(url, data=b"", method="POST")
    request.add_header("User-Agent", f"{CLI_AGENT}/{__version__}")
    if server.api_token:
        request.add_header("Authorization", f"Bearer {server.api_token}")
    context = _client_ssl_context(service) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=RELOAD_TIMEOUT, context=context) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        hint = (
            "a changed server.listen takes effect at a restart: until then the service "
            "listens where it did"
        )
        if isinstance(reason, ssl.SSLCertVerificationError):
            # A renewed self-signed certificate: the service shows the old one until reloaded.
            hint = (
                "the service presents a certificate that neither server.tls_cert_file nor "
                "ha.ca_file verifies; after a renewal, reload it by SIGHUP (systemctl reload "
                "monitor-manager)"
            )
        print(
            f"no answer from the service at {url.split('?')[0]}: {reason} ({hint})", file=sys.stderr
        )
        return 1
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        print(f"HTTP {status}: {raw[:500].decode(errors='replace')}", file=sys.stderr)
        return 1
    if status != 200:
        print(answer.get("error") or f"HTTP {status}", file=sys.stderr)
        shown = answer.get("config") or "config"
        for problem in answer.get("problems") or []:
            print(f"{shown}: {problem}", file=sys.stderr)
        return 1
    print(reload_text(answer))
    return 0


RELOAD_TIMEOUT = 60.0  # a reload waits up to 30 s for requests in flight, then loads memory


def reload_text(answer: dict[str, Any]) -> str:
    """A successful reload's answer, as `monitor-manager reload` prints it."""
    changed = ", ".join(answer.get("changed") or []) or "nothing"
    lines = [f"reloaded {answer.get('config')}; changed: {changed}"]
    lines += [f"needs a restart: {note}" for note in answer.get("needs_restart") or []]
    lines += [
        f"alert group {r['group']} of removed contact group {r['contact_group']} closed; "
        f"its {r['alerts']} firing alerts routed again, to {', '.join(r['to']) or 'nobody'}"
        for r in answer.get("rerouted") or []
    ]
    return "\n".join(lines)


def _service_of(path: str | None) -> Config:
    """The config at `path`, for its [server] section and ha.ca_file. A config with problems
    elsewhere still says where the service listens (its [server] section alone; the service
    lists those problems in its answer)."""
    if path is None:
        return default_config()
    try:
        return load_config(path)
    except ConfigError as exc:
        try:
            data = tomllib.loads(open(path, encoding="utf-8").read())
        except (OSError, ValueError):
            raise exc from None
        server = data.get("server") if isinstance(data, dict) else None
        try:
            return parse_config({"server": server or {}}, path)
        except ConfigError:
            raise exc from None


def _local_url(server: ServerConfig) -> str:
    """The service's own address: a wildcard listen address is reached on loopback."""
    host, port = split_listen(server.listen)
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if server.tls_cert_file else 'http'}://{shown}:{port}"


def _client_ssl_context(config: Config) -> ssl.SSLContext:
    """The service's own certificate is what to trust (a self-signed one, or one whose name
    is not the address dialled), and the cluster's CA (ha.ca_file): after a renewal the file
    holds the new certificate while the service still shows the old one, which that CA
    issued too. The system's CAs when neither can be read here."""
    try:
        context = ssl.create_default_context(cafile=config.server.tls_cert_file)
    except (OSError, ssl.SSLError):
        return ssl.create_default_context()
    if config.ha.ca_file:
        try:
            context.load_verify_locations(cafile=config.ha.ca_file)
        except (OSError, ssl.SSLError):
            pass  # the certificate file alone, as without a CA
    context.check_hostname = False  # trusted by the certificate itself, not by a name
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def _user(getpass: Any) -> str:
    try:
        return str(getpass.getuser())
    except Exception:  # no user name to be found (a container without one)
        return "cli"


def hash_password_command() -> int:
    """For `[[console.users]] password`: asks twice on a terminal, reads one line otherwise."""
    import getpass

    from monitor_manager.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("the password must not be empty", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


async def send_test(config: Config, group_name: str) -> int:
    from monitor_manager.build import build_channels, build_renderer
    from monitor_manager.channels import ChannelContext, ChannelError

    group = next((g for g in config.contact_groups if g.name == group_name), None)
    if group is None:
        names = ", ".join(g.name for g in config.contact_groups)
        print(f"no contact group {group_name!r} (have: {names})", file=sys.stderr)
        return 1
    message = Message(
        id=0,
        kind="test",
        contact_group=group.name,
        recipients=group.members,
        groups=(),
        created_at=time.time(),
        instance=config.server.instance,
        external_url=config.server.external_url,
    )
    renderer = build_renderer(config)
    failed = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        ctx = ChannelContext(
            session=session,
            renderer=renderer,
            clock=time.time,
            stdout=sys.stdout,
            instance=config.server.instance,
        )
        channels = build_channels(config, ctx)
        for name in group.channels:
            channel = channels[name]
            try:
                note = await channel.send(message)
            except ChannelError as exc:
                failed += 1
                kind = "permanent" if exc.permanent else "transient"
                print(f"{name}: FAILED ({kind}): {exc.reason}")
            else:
                print(f"{name}: ok{f' ({note})' if note else ''}")
        for channel in channels.values():
            await channel.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
