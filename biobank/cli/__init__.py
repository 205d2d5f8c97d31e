"""The `biobank` command. With no subcommand it opens the technicians' terminal UI."""

from __future__ import annotations

import errno
import importlib
import sys
from typing import TYPE_CHECKING

import typer
from typer.core import TyperCommand, TyperGroup

from biobank import __version__
from biobank.cli.common import CliState, JsonOption, emit_json, message, state, work
from biobank.errors import BiobankError

if TYPE_CHECKING:
    from typer._click import HelpFormatter

# Commands and command groups by name: (module, function or Typer app). Each module is imported
# when its command runs or its own help is asked for, and each command imports the services it
# uses in its body: so `biobank --help`, a group's help and the workstation start without the
# database layer, and each command without any other command's services.
COMMANDS = {
    "scan": ("biobank.cli.specimen_commands", "scan_command"),
    "backup": ("biobank.cli.backup_commands", "backup_command"),
    "restore": ("biobank.cli.backup_commands", "restore_command"),
    "label": ("biobank.cli.label_commands", "label_command"),
    "reconcile": ("biobank.cli.reconcile_commands", "reconcile_command"),
}
GROUPS = {
    "db": ("biobank.cli.db_commands", "app"),
    "config": ("biobank.cli.config_commands", "app"),
    "user": ("biobank.cli.user_commands", "app"),
    "study": ("biobank.cli.study_commands", "study_app"),
    "participant": ("biobank.cli.study_commands", "participant_app"),
    "visit": ("biobank.cli.study_commands", "visit_app"),
    "specimen": ("biobank.cli.specimen_commands", "app"),
    "storage": ("biobank.cli.storage_commands", "app"),
    "audit": ("biobank.cli.audit_commands", "app"),
    "import": ("biobank.cli.import_commands", "app"),
    "consent": ("biobank.cli.consent_commands", "app"),
    "phenotype": ("biobank.cli.phenotype_commands", "app"),
    "cohort": ("biobank.cli.cohort_commands", "app"),
    "export": ("biobank.cli.export_commands", "app"),
    "agreement": ("biobank.cli.agreement_commands", "app"),
    "request": ("biobank.cli.request_commands", "app"),
    "shipment": ("biobank.cli.shipment_commands", "app"),
}
# What `biobank --help` lists for each of them, without importing it: the first sentence of its
# help (tests/test_cli_startup.py checks that the list reads as the loaded commands' would).
SUMMARIES = {
    "agreement": "Data use agreements (limited data sets name one).",
    "audit": "Read and verify the tamper-evident audit trail.",
    "backup": "Copy the whole database to FILE (SQLite's online backup, or pg_dump's custom "
    "format).",
    "cohort": "Cohort queries: filters, counts before export, saved queries.",
    "config": "Show settings and where they come from.",
    "consent": "Consent: statements, signed documents, withdrawals and the pull list.",
    "db": "Create, upgrade and check the database schema.",
    "export": "Consent-enforced, de-identified exports of specimens and phenotypes.",
    "import": "Import data kept in other systems.",
    "label": "Make labels for tubes, boxes or a collection kit: files (--format/--out) or a "
    "printer (--printer, or the workstation's default printer when no --out is given).",
    "participant": "Pseudonymous participants; PHI only for admins.",
    "phenotype": "Phenotype data: the dictionary and each participant's values.",
    "reconcile": "Compare a box/rack scanner export with the inventory, position by position.",
    "restore": "Replace the whole database with the backup in FILE, once it is checked (schema "
    "version, integrity, audit chain).",
    "request": "Specimen requests: a PI asks for tubes, a reviewer approves or rejects them.",
    "scan": "Resolve a scan to a specimen, box, participant or badge (exit 4 unknown, 2 misread).",
    "shipment": "Shipments: a request's picked tubes packed, sent with a manifest, confirmed.",
    "specimen": "Accession specimens, split aliquots, and keep custody of tubes.",
    "storage": "Storage units: sites, freezers, shelves, racks and boxes.",
    "study": "Studies (protocols) and their specimen ID prefixes.",
    "user": "Manage users, roles and PINs (admins).",
    "visit": "Participant visits (baseline, month 6, flare…).",
}


# The operating system's refusals a person puts right (a mistyped path, a permission, a full
# disk): one line, like a domain error. Any other OSError is a bug and keeps its traceback.
FIXABLE_OS_ERRORS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES,
     errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
)  # fmt: skip


class BiobankGroup(TyperGroup):
    """Maps domain errors to one line on stderr and the error's exit code, in one place; loads
    the commands (`COMMANDS`) and command groups (`GROUPS`) as they are asked for.

    Past the domain errors it catches narrowly, as a last line of defence (exit 2): an input
    too large or too deep for the process (`RecursionError`, `MemoryError`: the readers and
    the condition parser have limits, this is for what slips past them) and the system's
    refusals in FIXABLE_OS_ERRORS. Settings that are not valid are domain errors already
    (`load_settings`). Anything else unexpected is a bug, and shows its traceback."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS, *GROUPS])

    def get_command(self, ctx: typer.Context, name: str) -> TyperCommand | TyperGroup | None:
        if name in COMMANDS:
            module, attribute = COMMANDS[name]
            single = typer.Typer(add_completion=False)  # completion is the root's option
            single.command(name)(getattr(importlib.import_module(module), attribute))
            return _plain_help(typer.main.get_command(single))
        if name in GROUPS:
            module, attribute = GROUPS[name]
            group = typer.main.get_group(getattr(importlib.import_module(module), attribute))
            group.name = name
            return _plain_help(group)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: typer.Context, formatter: HelpFormatter) -> None:
        """The list in `--help`: a lazy command by its summary (`SUMMARIES`), not loaded; any
        other by its own help."""
        listed: list[tuple[str, TyperCommand | TyperGroup]] = []
        for name in self.list_commands(ctx):
            if name in SUMMARIES:
                listed.append((name, TyperCommand(name=name, help=SUMMARIES[name])))
            elif (command := self.get_command(ctx, name)) is not None and not command.hidden:
                listed.append((name, command))
        limit = formatter.width - 6 - max(len(name) for name, _ in listed)
        with formatter.section("Commands"):
            formatter.write_dl([(name, c.get_short_help_str(limit)) for name, c in listed])

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except BiobankError as error:
            message(f"biobank: error: {error.message}")
            raise typer.Exit(error.exit_code) from None
        except (RecursionError, MemoryError) as error:
            name = type(error).__name__
            message(f"biobank: error: the input is too large or too deeply nested ({name})")
            raise typer.Exit(2) from None
        except OSError as error:
            if error.errno not in FIXABLE_OS_ERRORS:
                raise
            where = f"{error.filename}: " if error.filename else ""
            message(f"biobank: error: {where}{error.strerror}")
            raise typer.Exit(2) from None
        finally:
            if isinstance(ctx.obj, CliState):
                ctx.obj.close()


def _plain_help(command: TyperCommand | TyperGroup) -> TyperCommand | TyperGroup:
    """Help shown as it is written, in every command and group whatever module makes it:
    Typer reads help as Rich markup by default, where `[columns]` is a style that vanishes
    and `[/x]` an error."""
    command.rich_markup_mode = None
    for subcommand in getattr(command, "commands", {}).values():
        _plain_help(subcommand)
    return command


app = typer.Typer(
    cls=BiobankGroup,
    help="Specimen biobank inventory. Run without a command to open the terminal UI.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help as written (`_plain_help`), and errors as plain lines
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"biobank {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    user: str | None = typer.Option(
        None, "--user", "-u", help="Act as this user (default: BIOBANK_USER, or the only user)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    ctx.obj = CliState(user=user)
    if ctx.invoked_subcommand is None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            typer.echo(ctx.get_help())
            message("biobank: the terminal UI needs a terminal; run a command instead")
            raise typer.Exit(2)
        tui(ctx)


@app.command()
def tui(ctx: typer.Context) -> None:
    """Open the terminal UI (the default when no command is given)."""
    from tui.app import run  # imported here: the CLI must not pay for Textual

    cli = state(ctx)
    run(settings=cli.settings, database=lambda: cli.database(announce=False))


@app.command()
def demo(
    ctx: typer.Context,
    participants: int = typer.Option(300, "--participants", "-n", min=1, max=100_000),
    seed: int = typer.Option(7, "--seed", help="Same seed, same cohort."),
    if_empty: bool = typer.Option(
        False, "--if-empty", help="Do nothing (and succeed) when the database has data."
    ),
    specimens: bool = typer.Option(
        True, "--specimens/--no-specimens", help="Also a freezer of serum tubes."
    ),
    json: JsonOption = False,
) -> None:
    """Seed a synthetic lupus cohort into an empty database (deterministic for a seed)."""
    from biobank.services.demo import seed_demo, sign_in_hint
    from biobank.services.overview import is_empty

    if if_empty:
        with state(ctx).database().unit_of_work(readonly=True) as session:
            if not is_empty(session):
                message("the database already has data; demo not loaded")
                return
    with work(ctx) as (session, actor):
        summary = seed_demo(
            session,
            actor=actor,
            participants=participants,
            seed=seed,
            with_specimens=specimens,
        )
    if json:
        emit_json(summary.__dict__)
        return
    message(
        f"demo cohort loaded: study {summary.study}, {summary.participants} participants, "
        f"{summary.visits} visits, {summary.specimens} specimens, {summary.consents} signed "
        f"consents ({summary.withdrawals} withdrawals), {summary.phenotype_values} phenotype "
        f"values; {sign_in_hint(summary)}"
    )


def main() -> None:
    app(prog_name="biobank")
