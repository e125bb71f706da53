"""``bmseg user create`` and ``bmseg token create|revoke``: dashboard accounts and API bearer tokens."""

from __future__ import annotations

import typer

from bmcore.accounts import create_token, create_user, revoke_token
from bmcore.db import init_db, session_scope

user_app = typer.Typer(help="Dashboard accounts.", no_args_is_help=True)
token_app = typer.Typer(help="API bearer tokens (stored hashed; shown once).", no_args_is_help=True)
commands = typer.Typer()
commands.add_typer(user_app, name="user")
commands.add_typer(token_app, name="token")


@user_app.command("create")
def user_create(
    email: str = typer.Argument(..., help="Sign-in e-mail."),
    admin: bool = typer.Option(False, "--admin", help="May see every user's studies and jobs."),
    password: str = typer.Option(
        ...,
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="BMSEG_NEW_PASSWORD",
        help="At least 8 characters.",
    ),
) -> None:
    """Create a dashboard account (password stored hashed)."""
    init_db()
    with session_scope() as session:
        user = create_user(session, email, password, is_admin=admin)
        typer.echo(f"created {'admin ' if user.is_admin else ''}user {user.email}")


@token_app.command("create")
def token_create(
    email: str = typer.Argument(..., help="The user the token acts for."),
    name: str = typer.Option("cli", help="A name to tell tokens apart."),
) -> None:
    """Create an API token for a user; prints it once (only its hash is stored)."""
    init_db()
    with session_scope() as session:
        typer.echo(create_token(session, email, name))


@token_app.command("revoke")
def token_revoke(
    email: str = typer.Argument(..., help="The token's user."),
    name: str = typer.Option(..., help="The token's name."),
) -> None:
    """Revoke a user's token by name."""
    init_db()
    with session_scope() as session:
        typer.echo(f"revoked {revoke_token(session, email, name)} token(s)")
