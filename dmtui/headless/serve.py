"""`dmtui serve DATA`: the same app in a web browser, through textual-serve.

It listens on 127.0.0.1 only: from another machine, forward the port over SSH (the
command prints the `ssh -L` line). Each browser tab gets its own app process, started
as `dmtui open DATA ...`; closing the tab ends it. Ctrl-C (or SIGTERM) stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import shlex
import socket
import sys

from dmtui.headless.common import add_dataset_arguments, dataset_options, fail, path_argument

HOST = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the app to a web browser on 127.0.0.1 (reach it from elsewhere with ssh -L)",
        description="Serve `dmtui open DATA` through textual-serve on 127.0.0.1:PORT. Only this machine can "
        "connect; the command prints the URL and the ssh line that forwards the port to your laptop.",
    )
    add_dataset_arguments(parser)
    parser.add_argument("--port", type=int, default=8000, help="TCP port on 127.0.0.1 (default 8000)")
    parser.add_argument("--workspace", metavar="DIR", type=path_argument,
                        help="workspace folder (default: next to the dataset)")
    parser.add_argument("--demo-models", action="store_true", help="as for `dmtui open`")
    parser.add_argument("--margin", action="append", default=[], metavar="NAME=COL[,COL]",
                        help="as for `dmtui open`")
    parser.set_defaults(handler=run)


def app_command(args: argparse.Namespace) -> list[str]:
    """The `dmtui open` each browser tab runs, with the options given here."""
    command = [sys.executable, "-m", "dmtui", "open", args.data, *dataset_options(args)]
    if args.workspace is not None:
        command += ["--workspace", args.workspace]
    if args.demo_models:
        command.append("--demo-models")
    for margin in args.margin:
        command += ["--margin", margin]
    return command


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        fail(f"--port {args.port}: not a TCP port", "choose one from 1024 to 65535")
    with socket.socket() as probe:  # a clear message now rather than a traceback from the web server
        try:
            probe.bind((HOST, args.port))
        except OSError as error:
            fail(f"port {args.port} on {HOST} is not free ({error.strerror})", "pass --port with another port")
    from textual_serve.server import Server

    url = f"http://{HOST}:{args.port}"
    print(f"dmtui serves {args.data} at {url}  (Ctrl-C stops it)", flush=True)
    print(f"from another machine: ssh -L {args.port}:{HOST}:{args.port} {getpass.getuser()}@{socket.gethostname()}"
          f"  then open {url}", flush=True)
    asyncio.set_event_loop(asyncio.new_event_loop())  # the server takes the current loop: never a closed one
    Server(shlex.join(app_command(args)), host=HOST, port=args.port, title="dmtui").serve()
    return 0
