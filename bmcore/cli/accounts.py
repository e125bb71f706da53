"""``bmseg user …``, ``bmseg group …`` and ``bmseg token …``: accounts, the groups that share patients,
and API bearer tokens (docs/permissions.md).

These act on the database directly, with the operator's database credentials. Passwords are read from a
hidden, confirmed prompt or, with ``--password-stdin``, from the first line of standard input — never
from the command line, where other users of the machine could read them (``ps``, shell history).
An unknown user, role or group, or a refused value, exits 1 with one ``error:`` line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from sqlalchemy.orm import Session

from bmcore.accounts import (
    check_role,
    create_user,
    disable_user,
    enable_user,
    get_user,
    issue_token,
    list_users,
    require_user,
    revoke_token,
    set_password,
    set_role,
)
from bmcore.db import ROLES, init_db, session_scope
from bmcore.memberships import add_member, create_group, list_groups, remove_member

user_app = typer.Typer(
    help="Dashboard and API accounts: create, disable, roles, passwords.", no_args_is_help=True
)
group_app = typer.Typer(help="Groups share their patients among their members.", no_args_is_help=True)
token_app = typer.Typer(
    help="API bearer tokens (stored hashed; shown once; they expire).", no_args_is_help=True
)
commands = typer.Typer()
commands.add_typer(user_app, name="user")
commands.add_typer(group_app, name="group")
commands.add_typer(token_app, name="token")

ROLE_HELP = f"One of {', '.join(ROLES)}."
PASSWORD_STDIN_HELP = "Read the password from the first line of standard input instead of a prompt."


@contextmanager
def database() -> Iterator[Session]:
    """A session on the settings' database (schema upgraded); a refused value exits 1 with one line."""
    try:
        init_db()
        with session_scope() as session:
            yield session
    except (ValueError, LookupError) as exc:
        typer.echo(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
        raise typer.Exit(1) from None


def read_password(from_stdin: bool) -> str:
    """The new password: the first line of stdin (line ending removed), or a hidden, confirmed prompt."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


# ----------------------------------------------------------------------------------------- users


@user_app.command("create")
def user_create(
    email: str = typer.Argument(..., help="Sign-in e-mail."),
    role: str | None = typer.Option(None, "--role", help=f"{ROLE_HELP} Default: researcher."),
    admin: bool = typer.Option(False, "--admin", help="Same as --role admin."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help=PASSWORD_STDIN_HELP),
) -> None:
    """Create an account (password at least 8 characters, stored hashed)."""
    with database() as session:
        if role is not None:
            check_role(role)
        if get_user(session, email) is not None:
            raise ValueError(f"a user {email.strip().lower()} already exists")
        user = create_user(session, email, read_password(password_stdin), is_admin=admin, role=role)
        typer.echo(f"created {user.role} {user.email}")


@user_app.command("set-password")
def user_set_password(
    email: str = typer.Argument(..., help="The account."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help=PASSWORD_STDIN_HELP),
) -> None:
    """Replace a user's password; signs them out of every dashboard session."""
    with database() as session:
        require_user(session, email)
        user = set_password(session, email, read_password(password_stdin))
        typer.echo(f"password changed for {user.email}; their dashboard sessions ended")


@user_app.command("set-role")
def user_set_role(
    email: str = typer.Argument(..., help="The account."),
    role: str = typer.Argument(..., help=ROLE_HELP),
) -> None:
    """Give a user another role."""
    with database() as session:
        user = set_role(session, email, role)
        typer.echo(f"{user.email} is now {user.role}")


@user_app.command("disable")
def user_disable(email: str = typer.Argument(..., help="The account.")) -> None:
    """Lock a user out: sign-in, tokens and dashboard sessions refused (sessions ended)."""
    with database() as session:
        typer.echo(f"disabled {disable_user(session, email).email}")


@user_app.command("enable")
def user_enable(email: str = typer.Argument(..., help="The account.")) -> None:
    """Let a disabled user in again (their unexpired tokens work again)."""
    with database() as session:
        typer.echo(f"enabled {enable_user(session, email).email}")


@user_app.command("list")
def user_list() -> None:
    """Every account: e-mail, role, status and groups."""
    with database() as session:
        users = list_users(session)
        width = max([len("email"), *(len(user.email) for user in users)])
        typer.echo(f"{'email':<{width}}  {'role':<10}  {'status':<8}  groups")
        for user in users:
            status = "disabled" if user.disabled else "enabled"
            groups = ", ".join(sorted(group.name for group in user.groups)) or "-"
            typer.echo(f"{user.email:<{width}}  {user.role:<10}  {status:<8}  {groups}")


# ----------------------------------------------------------------------------------------- groups


@group_app.command("create")
def group_create(name: str = typer.Argument(..., help="1-64 letters, digits, '_', '.', '-'.")) -> None:
    """Create an empty group."""
    with database() as session:
        typer.echo(f"created group {create_group(session, name).name}")


@group_app.command("add")
def group_add(
    name: str = typer.Argument(..., help="The group."),
    email: str = typer.Argument(..., help="The user to add."),
) -> None:
    """Add a user to a group: they see its patients."""
    with database() as session:
        user = require_user(session, email)
        added = add_member(session, name, user)
        typer.echo(
            f"{'added' if added else 'already a member:'} {user.email} {'to' if added else 'of'} {name}"
        )


@group_app.command("remove")
def group_remove(
    name: str = typer.Argument(..., help="The group."),
    email: str = typer.Argument(..., help="The user to remove."),
) -> None:
    """Take a user out of a group."""
    with database() as session:
        user = require_user(session, email)
        removed = remove_member(session, name, user)
        typer.echo(f"removed {user.email} from {name}" if removed else f"{user.email} was not in {name}")


@group_app.command("list")
def group_list() -> None:
    """Every group and its members."""
    with database() as session:
        for group in list_groups(session):
            members = ", ".join(sorted(user.email for user in group.members)) or "(no members)"
            typer.echo(f"{group.name}: {members}")


# ----------------------------------------------------------------------------------------- tokens


@token_app.command("create")
def token_create(
    email: str = typer.Argument(..., help="The user the token acts for."),
    name: str = typer.Option("cli", help="A name to tell tokens apart."),
    days: int | None = typer.Option(
        None,
        "--days",
        help="Days until it expires (default, maximum: BMSEG_TOKEN_DEFAULT_DAYS, BMSEG_TOKEN_MAX_DAYS).",
    ),
) -> None:
    """Create an API token for a user: prints it once on stdout (only its hash is stored), and when it
    expires on stderr."""
    with database() as session:
        issued = issue_token(session, email, name, days)
        typer.echo(issued.token)
        typer.echo(f"expires {issued.expires_at:%Y-%m-%d %H:%M} UTC", err=True)


@token_app.command("revoke")
def token_revoke(
    email: str = typer.Argument(..., help="The token's user."),
    name: str = typer.Option(..., help="The token's name."),
) -> None:
    """Revoke a user's token by name."""
    with database() as session:
        typer.echo(f"revoked {revoke_token(session, email, name)} token(s)")
