"""``serve`` (the studio web app, the default command) and ``hash-password`` (a login for ``--auth-file``)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from agent_studio.cli.options import (
    add_executor_arguments,
    Command,
    add_db_argument,
    open_cli_store,
    plural,
    port_number,
    positive_int,
    print_progress,
)
from studio.errors import StudioError


def check_listen_address(host: str, port: int) -> int:
    """Fail now, in one line, if ``host:port`` cannot be served (not an address, not ours, in use);
    the port to serve on (port 0: a free one, chosen here, so the address printed is the real one)."""
    import errno
    import socket

    try:
        family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError, ValueError):
        raise StudioError(f"Cannot listen on --host {host[:80]!r}: not an address or a known host name.") from None
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        return int(probe.getsockname()[1])
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StudioError(f"Port {port} on {host} is in use (another studio?): pick another with --port.") from None
        raise StudioError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    finally:
        probe.close()


def listen_address(args: argparse.Namespace) -> tuple[str, int]:
    """Host and port: the flags, else Gradio's own environment variables (as ``gradio`` apps honour
    them in containers), else 127.0.0.1:7860."""
    host = args.host if args.host is not None else os.environ.get("GRADIO_SERVER_NAME", "").strip() or "127.0.0.1"
    if args.port is not None:
        return host, args.port
    text = os.environ.get("GRADIO_SERVER_PORT", "").strip()
    if not text:
        return host, 7860
    try:
        return host, port_number(text)
    except argparse.ArgumentTypeError as exc:
        raise StudioError(f"GRADIO_SERVER_PORT: {exc}.") from None


def sweep_executor(args: argparse.Namespace) -> Any:
    """What makes the executor the Compare tab's sweeps run on (None: this process). A cluster is reached
    once now, so a wrong address is one line at start rather than a failed sweep later."""
    if args.executor == "local":
        return None
    from agent_studio.cli.options import executor_options
    from studio.executors import make_executor

    options = executor_options(args)
    print(f"sweeps from the Compare tab run on {make_executor(args.executor, options).describe()}", flush=True)
    return lambda: make_executor(args.executor, options)


def cmd_serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args.host, args.port = listen_address(args)
    from agent_studio.components.auth import load_credentials, require_auth_beyond_loopback
    from studio.models.access import ModelAccess

    # Everything the operator can get wrong fails here, before a model loads or a port opens.
    credentials = load_credentials(args.auth, args.auth_file)
    args.port = check_listen_address(args.host, args.port)
    require_auth_beyond_loopback(args.host, credentials)
    access = ModelAccess(
        trust_remote_code=args.trust_remote_code, model_dirs=tuple(args.models_dir), servers=tuple(args.allow_server)
    )
    from studio.importers.access import ImportFolders

    args.imports = ImportFolders(tuple(args.import_dir))  # refused now, before a model loads
    store = open_cli_store(args)
    orphans = store.episodes.end_orphans()  # episodes a crashed process of this machine left "running"
    if orphans:
        print(f"ended {plural(orphans, 'episode')} that a process which died had left running", file=sys.stderr)
    engine = start_engine(args) if args.engine else None
    import signal

    # SIGTERM (docker stop, systemd) ends serve through the finally blocks: open pages' episodes are
    # ended, the engine stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return _serve(args, access, store, credentials)
    finally:
        if engine is not None:
            engine.stop()


def start_engine(args: argparse.Namespace) -> Any:
    """``serve --engine vllm``: start vLLM on ``--model`` (its folder) and make model A its URL."""
    from studio.models.engines import start_vllm
    from studio.models.resolve import resolve

    if args.model == "none":
        raise StudioError("--engine needs a model to serve: give --model.")
    resolved = resolve(args.model)
    if resolved.gguf_file:
        raise StudioError(f"--engine vllm serves model folders, not a single .gguf file ({args.model}).")
    print(f"starting vLLM on {resolved.path} (on a CPU this takes 30-70 s)", file=sys.stderr, flush=True)
    import torch

    # float32 on a CPU (bf16 is slower there and the CPU build was measured in float32); the engine picks on a GPU
    dtype = "auto" if torch.cuda.is_available() else "float32"
    cpu = not torch.cuda.is_available()
    server = start_vllm(
        resolved.path, served_name=resolved.repo or args.model, dtype=dtype, block_size=32 if cpu else None
    )
    print(f"vLLM ready at {server.url} after {server.started_s:.0f} s", file=sys.stderr, flush=True)
    args.model = server.url
    return server


def _serve(args: argparse.Namespace, access: Any, store: Any, credentials: Any) -> int:
    from studio.models.registry import ModelRegistry

    registry = ModelRegistry()
    default_model = None
    if args.model != "none":
        try:
            default_model = registry.load(
                args.model, device=args.device, trust_remote_code=args.trust_remote_code, progress=print_progress
            )
            registry.pin(default_model)
        except StudioError as exc:  # the studio still starts: the model panel says what happened
            print(f"warning: model {args.model!r} did not load ({exc}); starting without it", file=sys.stderr)
    from agent_studio.components.auth import login_app_kwargs
    from agent_studio.components.layout import Services, build_app
    from agent_studio.components.theme import launch_options
    from studio.jobs import WebLimits

    limits = WebLimits(max_steps=args.max_web_steps, concurrency=args.web_jobs)
    services = Services(
        registry=registry,
        store=store,
        default_model=default_model,
        access=access,
        limits=limits,
        imports=args.imports,
        sweep_executor=sweep_executor(args),
    )
    app = build_app(services)
    options = launch_options()  # reads the packaged stylesheet: a broken install says so, not "cannot serve"
    print(f"Agent Studio on http://{args.host}:{args.port}" + (" (login required)" if credentials else ""), flush=True)
    try:
        # show_error=False: an unexpected exception's text (which may quote a file's or a model's
        # content) never reaches the page; the panels show their own escaped one-line messages.
        app.launch(
            server_name=args.host,
            server_port=args.port,
            show_error=False,
            auth=credentials.check if credentials else None,
            app_kwargs=login_app_kwargs() if credentials else None,
            **options,
        )
    except OSError as exc:  # e.g. the port was taken between the check and the start
        raise StudioError(f"Cannot serve on {args.host}:{args.port}: {exc}.") from None
    finally:
        services.close_all()  # a clean stop leaves no episode "running"
        services.downloads.close()
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print a hashed password for an --auth-file line (``user:`` followed by it)."""
    import getpass

    from agent_studio.components.auth import hash_password

    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not password:
        raise StudioError("An empty password cannot be hashed.")
    print(hash_password(password))
    return 0


def serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; any other address than loopback needs --auth)",
    )
    parser.add_argument("--port", type=port_number, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument(
        "--model",
        default="default",
        help="model A of every session: default, a hub id, a local folder, scripted:FILE.json, or none",
    )
    parser.add_argument("--device", default="auto", help="device for that model: auto, cpu, cuda, mps")
    parser.add_argument(
        "--engine",
        choices=["vllm"],
        default=None,
        help="serve --model through an inference engine the studio starts (vLLM from .venv-vllm, on loopback) instead of in this process",
    )
    add_db_argument(parser)
    add_executor_arguments(parser)
    access = parser.add_argument_group("who may load what, and who may log in")
    access.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let model repositories' own Python run, also for models loaded in the browser (off by default)",
    )
    access.add_argument(
        "--models-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose models the browser may load (repeatable); without it the browser loads only default and hub ids",
    )
    access.add_argument(
        "--import-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder the Episodes tab may import recorded episodes from (repeatable); off by default",
    )
    access.add_argument(
        "--allow-server",
        action="append",
        default=[],
        metavar="URL",
        help="an inference server (http://HOST:PORT/v1) whose models the browser may load (repeatable); off by default",
    )
    access.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="a login (repeatable); required to serve beyond this machine",
    )
    access.add_argument(
        "--auth-file",
        default=None,
        metavar="FILE",
        help="logins, one user:password a line (the password may be hashed: see hash-password)",
    )
    budget = parser.add_argument_group("what work started from the browser may cost")
    budget.add_argument(
        "--max-web-steps",
        type=positive_int,
        default=200_000,
        metavar="N",
        help="environment steps one web-started job may take (a sweep's cells x step limit, a value "
        "estimate's outputs x rollouts x horizon); default 200,000",
    )
    budget.add_argument(
        "--web-jobs",
        type=positive_int,
        default=2,
        metavar="N",
        help="heavy jobs (values, cross-scores, attention, videos, judging, sweeps) run at once; the rest queue (default 2)",
    )


SERVE = Command("serve", "start the studio web app (the default command)", serve_arguments, cmd_serve)
HASH_PASSWORD = Command(
    "hash-password",
    "read a password (prompt or stdin) and print its hash for an --auth-file line",
    None,
    cmd_hash_password,
)
