"""`biobank db workstation-role ROLE`: the SQL of a least-privilege role for workstations."""

from __future__ import annotations

import typer


def workstation_role_command(
    role: str = typer.Argument(..., help="The PostgreSQL login role to make or restrict."),
) -> None:
    """Print the SQL that lets ROLE run biobank at a workstation but delete nothing (a wrong
    PIN's count aside), truncate nothing, alter no audit entry and change no table.

    Run it as the owner of the tables, and again after each `biobank db upgrade`, e.g.
    `biobank db workstation-role bench | psql -d biobank`. This command reads and changes
    nothing itself.
    """
    from biobank.services.db_roles import workstation_role_sql

    typer.echo(workstation_role_sql(role), nl=False)
