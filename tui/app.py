"""The Textual application: sign-in, then the home screen.

Database work runs in thread workers, one unit of work each; results come back to the UI
thread. Service errors are shown in one place (`BiobankApp.show_error`).
"""

from __future__ import annotations

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static

from biobank.bootstrap import OpenDatabase
from biobank.errors import BiobankError
from biobank.permissions import Actor
from biobank.services.overview import Overview, inventory_overview
from biobank.services.users import authenticate
from biobank.settings import Settings


class SignInScreen(Screen):
    """Username and PIN. Every change made afterwards is made as this user."""

    DEFAULT_CSS = """
    SignInScreen { align: center middle; }
    #sign-in { width: 44; height: auto; border: round $primary; padding: 1 2; }
    #sign-in Input { margin-bottom: 1; }
    """

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="sign-in"):
            yield Label("Sign in")
            yield Input(placeholder="username", id="username")
            yield Input(placeholder="PIN", password=True, id="pin")
            yield Button("Sign in", id="submit", variant="primary")
        yield Footer()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "username":
            self.query_one("#pin", Input).focus()
        else:
            self.submit()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        self.submit()

    def submit(self) -> None:
        username = self.query_one("#username", Input).value
        pin = self.query_one("#pin", Input).value
        self.query_one("#pin", Input).value = ""
        self.app.sign_in(username, pin)


class HomeScreen(Screen):
    BINDINGS = [  # noqa: RUF012
        Binding("ctrl+l", "app.lock", "Lock", id="lock"),
        Binding("r", "refresh", "Refresh", id="refresh"),
    ]

    def __init__(self, actor: Actor) -> None:
        super().__init__()
        self.actor = actor

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            f"Signed in as {self.actor.username} ({self.actor.role.value}) "
            f"at {self.actor.workstation}",
            id="who",
        )
        yield Static("Loading…", id="overview")
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self.app.load_overview(self.actor)

    def show_overview(self, overview: Overview) -> None:
        self.query_one("#overview", Static).update(
            f"Studies: {overview.studies}   Participants: {overview.participants}   "
            f"Visits: {overview.visits}   Specimens available: {overview.specimens_available}"
        )


class BiobankApp(App):
    TITLE = "biobank"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", id="quit", priority=True)]  # noqa: RUF012

    def __init__(self, *, settings: Settings, database: OpenDatabase) -> None:
        super().__init__()
        self.settings = settings
        self.database = database
        self.actor: Actor | None = None

    def on_mount(self) -> None:
        self.sub_title = self.settings.workstation
        self.push_screen(SignInScreen())

    def show_error(self, error: BiobankError) -> None:
        self.notify(error.message, title="Not done", severity="error", timeout=8)

    @work(thread=True, exclusive=True, exit_on_error=False, group="db")
    def sign_in(self, username: str, pin: str) -> None:
        try:
            with self.database.unit_of_work(readonly=True) as session:
                actor = authenticate(
                    session, username=username, pin=pin, workstation=self.settings.workstation
                )
        except BiobankError as error:
            self.call_from_thread(self.show_error, error)
            return
        self.call_from_thread(self._signed_in, actor)

    def _signed_in(self, actor: Actor) -> None:
        self.actor = actor
        self.switch_screen(HomeScreen(actor))

    def action_lock(self) -> None:
        self.actor = None
        self.switch_screen(SignInScreen())

    @work(thread=True, exclusive=True, exit_on_error=False, group="db")
    def load_overview(self, actor: Actor) -> None:
        try:
            with self.database.unit_of_work(readonly=True) as session:
                overview = inventory_overview(session, actor=actor)
        except BiobankError as error:
            self.call_from_thread(self.show_error, error)
            return
        self.call_from_thread(self._show_overview, overview)

    def _show_overview(self, overview: Overview) -> None:
        if isinstance(self.screen, HomeScreen):
            self.screen.show_overview(overview)


def run(*, settings: Settings, database: OpenDatabase) -> None:
    BiobankApp(settings=settings, database=database).run()
