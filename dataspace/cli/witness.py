"""``dataspace witness``: run an independent witness (its own key and state; never the server's database)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from dataspace.cli.common import console, err, one_line_errors

app = typer.Typer(no_args_is_help=True, help="Run an independent witness that cosigns transparency logs.")

_DATA = typer.Option(..., "--data-dir", help="The witness's own directory (key file and state).")
_NAME = typer.Option(..., "--name", help="The witness's key name, a schema-less URL, e.g. witness.example.org/w1.")


@app.command("init")
@one_line_errors
def init(data_dir: Path = _DATA, name: str = _NAME) -> None:
    """Create the witness key (kept if it exists) and print its verifier key for the log's configuration."""
    from dataspace.witness import WitnessState

    console.print(WitnessState(data_dir, name).cosigner.vkey, highlight=False, soft_wrap=True)


@app.command("add-log")
@one_line_errors
def add_log(
    origin: str = typer.Argument(..., help="The log's origin line, e.g. dataspace.example/usage."),
    vkey: list[str] = typer.Argument(..., help="The log's verifier key(s) (from the checkpoint route)."),
    data_dir: Path = _DATA,
    name: str = _NAME,
) -> None:
    """Watch a log: its origin and the operator's verifier key(s)."""
    from dataspace.witness import WitnessState
    from transparency.note import CheckpointError

    try:
        WitnessState(data_dir, name).add_log(origin, vkey)
    except CheckpointError:
        err.print("[red]error:[/red] not a valid Ed25519 verifier key", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"watching {origin}", highlight=False)


@app.command("serve")
@one_line_errors
def serve(
    data_dir: Path = _DATA,
    name: str = _NAME,
    bind: str = typer.Option("127.0.0.1:7380", help="host:port to listen on."),
    log: list[str] = typer.Option([], "--log", help="ORIGIN=VKEY[,VKEY]: watch this log (same as add-log)."),
) -> None:
    """Serve the C2SP tlog-witness protocol (POST /add-checkpoint) and gossip (POST /check)."""
    from dataspace.witness import WitnessState, make_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s witness %(message)s")
    state = WitnessState(data_dir, name)
    for spec in log:
        origin, _, keys = spec.partition("=")
        state.add_log(origin, [k for k in keys.split(",") if k])
    host, _, port = bind.rpartition(":")
    server = make_server(state, host or "127.0.0.1", int(port))
    console.print(f"witness {state.cosigner.vkey} on http://{bind}", highlight=False, soft_wrap=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
