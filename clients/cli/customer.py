"""``dataspace remote rewards ...``: a customer's points and rewards (browser sign-in)."""

from __future__ import annotations

import uuid

import typer

from clients.cli._common import base_url, console, credentials, sdk_errors
from clients.sdk import CustomerClient

app = typer.Typer(no_args_is_help=True, help="Points and rewards (customer).")


@app.command("list")
@sdk_errors
def rewards_list() -> None:
    """The rewards catalog and my balance."""
    with CustomerClient(base_url(), credentials(browser_ok=True, scope="points")) as client:
        balance = client.points().balance
        console.print(f"balance: {balance:,} points", highlight=False)
        for reward in client.rewards():
            console.print(f"  {reward.key:<20} {reward.cost:>8,}  {reward.name}", highlight=False)


@app.command("redeem")
@sdk_errors
def rewards_redeem(
    key: str = typer.Argument(..., help="Reward key."),
    quantity: int = typer.Option(1, min=1, max=100),
    idempotency_key: str | None = typer.Option(None, help="Reuse to retry safely (default: a new one)."),
) -> None:
    """Redeem a reward (idempotent: the same --idempotency-key never charges twice). Redeeming needs the
    ``redeem`` scope and a recent sign-in: the browser asks for the password when the last one is too old."""
    with CustomerClient(base_url(), credentials(browser_ok=True, scope="points redeem")) as client:
        result = client.redeem(key, quantity=quantity, idempotency_key=idempotency_key or uuid.uuid4().hex)
    console.print(
        f"redeemed {result.quantity} x {result.reward_name} for {result.cost:,} points; "
        f"balance {result.balance_after:,}",
        highlight=False,
    )
