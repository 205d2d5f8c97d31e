"""The first run of the embedded database: an empty inventory, and the offer of the demo cohort.

Only for the embedded single-workstation database, where loading the demo as the bootstrap
admin harms no one; a shared server database is filled by its administrators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label

from biobank.services.identity import actor_for
from biobank.services.overview import is_empty
from biobank.services.users import BOOTSTRAP_ADMIN

if TYPE_CHECKING:
    from biobank.services.demo import DemoSummary
    from tui.app import BiobankApp


class FirstRunScreen(ModalScreen[bool]):
    """Asks whether to load the demo cohort into the empty inventory."""

    DEFAULT_CSS = """
    FirstRunScreen { align: center middle; }
    FirstRunScreen Vertical { width: 64; height: auto; border: round $primary; padding: 1 2; }
    """
    BINDINGS = [  # noqa: RUF012
        Binding("y", "answer(True)", "Load the demo", id="load_demo"),
        Binding("n,escape", "answer(False)", "Start empty", id="skip_demo"),
    ]

    def compose(self) -> ComposeResult:
        from biobank.services.demo import DEMO_USERS  # the demo only when the inventory is empty

        user, _, _, pin = DEMO_USERS[0]
        with Vertical():
            yield Label(
                "The inventory is empty. Load the demo cohort (synthetic lupus registry; "
                f"sign in as {user} / {pin})? [y/n]",
                markup=False,
            )

    def action_answer(self, load: bool) -> None:
        self.dismiss(load)


def offer_demo(app: BiobankApp) -> None:
    """Ask whether to load the demo when the inventory is empty; load it as the bootstrap
    admin when the answer is yes."""

    def load(session) -> DemoSummary:
        from biobank.services.demo import seed_demo

        admin = actor_for(session, username=BOOTSTRAP_ADMIN, workstation=app.settings.workstation)
        return seed_demo(session, actor=admin, with_specimens=True)

    def loaded(summary: DemoSummary) -> None:
        from biobank.services.demo import sign_in_hint

        app.notify(
            f"Demo cohort loaded: {summary.participants} participants, {summary.visits} "
            f"visits; {sign_in_hint(summary)}",
            timeout=15,
        )

    def answered(load_it: bool | None) -> None:
        if load_it:
            app.notify("Loading the demo cohort…")
            app.run_db(load, loaded, authenticated=False)

    def checked(empty: bool) -> None:
        if not empty:
            return
        if app.at_untouched_sign_in():
            app.push_screen(FirstRunScreen(), answered)
        else:  # someone is signing in already: a y or n in a name must not answer
            app.notify("The inventory is empty: `biobank demo` loads the demo cohort", timeout=15)

    app.run_db(is_empty, checked, readonly=True, authenticated=False)
