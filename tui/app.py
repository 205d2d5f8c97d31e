"""The technicians' workstation: a scan-first Textual application over `biobank.services`.

- Scans: every key passes the scan detector first (`on_event`), so a scanner's burst never
  lands in the focused field; the scan is resolved and routed to the screen that wants it,
  or opens the right view.
- A scanned tube or box opens in the screen kept from the last scan, updated in place:
  building a screen anew is most of what a view costs (`open_view`).
- Database work runs in thread workers (`run_db`), one unit of work each; results come back
  to the UI thread, and every service error is shown in one place (`show_error`).
- The sign-in screen shows before the database layer is even imported: the database is opened
  in a thread behind it (`database`), while the user types; database work waits for it there.
- The screen locks after the configured idle time (or Ctrl+L). The same user signing in again
  finds their screens as they left them, reloaded; anyone else starts afresh at home.
- A view gone stale (another terminal changed the tube, filled the slot) is reloaded when a
  change is refused for it, so nobody acts twice on what they no longer see.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import textual.screen
from textual import events
from textual.app import App
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen

from biobank.errors import (
    BiobankError,
    ConcurrentChange,
    InvalidTransition,
    PermissionDenied,
    PositionOccupied,
)
from biobank.terminal_text import shown
from tui.scanner import ScanDetector

if TYPE_CHECKING:  # the services and the database layer are imported behind the sign-in
    from biobank.bootstrap import OpenDatabase
    from biobank.domain.permissions import Actor
    from biobank.services.identity import SignInAttempt
    from biobank.services.scan import Scan, SpecimenView
    from biobank.services.storage import BoxView
    from biobank.settings import Settings
    from tui.screens.specimen import Move


class ActionCommands(Provider):
    """Every action of the current screen and of the app, in the command palette."""

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        app = self.app
        seen = set()
        for node in (app.screen, app):
            for binding in node.BINDINGS:
                if not isinstance(binding, Binding) or binding.action in seen:
                    continue
                seen.add(binding.action)
                score = matcher.match(binding.description)
                if score > 0:
                    action = binding.action
                    target = app if node is app else app.screen
                    yield Hit(
                        score,
                        matcher.highlight(binding.description),
                        lambda target=target, action=action: app.call_later(
                            target.run_action, action
                        ),
                        help=f"key: {binding.key}",
                    )


# Textual paints a changed screen at the next tick of a timer at its frame rate, 60 a second: a
# view a scan opens waits for two or three ticks (its layout, then its paint), up to 50 ms on
# top of its own work, the slowest scans' p99. At 240 it waits a few milliseconds. Only a
# changed screen is painted, so an idle one costs nothing more, and animations keep their own
# rate. Textual reads the period as each screen first paints, so it is set before any is.
PAINT_PERIOD = 1 / 240
textual.screen.UPDATE_PERIOD = PAINT_PERIOD  # type: ignore[misc]  # a Final of Textual's

# Refusals that mean the view is older than the data: the view is reloaded.
STALE_VIEW = (ConcurrentChange, PositionOccupied, InvalidTransition)


def _settle_heap() -> None:
    """At the first sign-in, once: what starting up built (the modules, the database layer,
    Textual's styles, the home screen), the hundred thousand objects the collector's full
    passes would otherwise walk each time, tens of milliseconds at a moment no one chooses,
    such as between a scan and its tube's detail, is set aside from them. Garbage is collected
    first, so none of it is kept for ever; what the day's work makes later is collected as
    before."""
    gc.collect()
    gc.freeze()


class BiobankApp(App):
    TITLE = "biobank"
    CSS_PATH = "biobank.tcss"
    COMMANDS = App.COMMANDS | {ActionCommands}
    BINDINGS = [  # noqa: RUF012
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
        Binding("ctrl+l", "lock", "Lock the screen", id="lock"),
        Binding("f1", "help", "Help: keys", id="help"),
        Binding("ctrl+f", "freezers", "Freezers", id="freezers"),
        Binding("ctrl+n", "accession", "Accession", id="accession"),
        Binding("ctrl+r", "reconcile", "Reconcile a box", id="reconcile"),
        Binding("ctrl+j", "print_queue", "Print queue", id="print_queue"),
        Binding("ctrl+o", "pull_list", "Pull list (consent withdrawals)", id="pull_list"),
        Binding("ctrl+t", "export", "Export for a cohort", id="export"),
        Binding("ctrl+k", "pick_request", "Pick a specimen request", id="pick_request"),
        Binding("ctrl+b", "receive_shipment", "Receive a shipment", id="receive_shipment"),
        Binding("ctrl+g", "shipment_return", "Tubes back from a shipment", id="shipment_return"),
    ]
    # What needs someone signed in: before that, these keys are neither shown nor run.
    SIGNED_IN_ACTIONS = frozenset(
        {
            "lock",
            "freezers",
            "accession",
            "reconcile",
            "print_queue",
            "pull_list",
            "export",
            "pick_request",
            "receive_shipment",
            "shipment_return",
        }
    )

    def __init__(
        self, *, settings: Settings, database: OpenDatabase | Callable[[], OpenDatabase]
    ) -> None:
        """`database` is the open database, or what opens it: then it is opened in a thread
        once the sign-in screen shows."""
        super().__init__()
        self.settings = settings
        self._opening: Future[OpenDatabase] = Future()
        self._open = database if callable(database) else None
        if self._open is None:
            self._opening.set_result(database)
        self.actor: Actor | None = None
        self.locked_by: str | None = None  # who left their screens under the lock
        scanner = settings.scanner
        self.detector: ScanDetector[events.Key] = ScanDetector(
            max_interval=scanner.max_key_interval_ms / 1000, min_length=scanner.min_length
        )
        self._release_timer = None
        self.clock: Callable[[], float] = time.monotonic  # seconds; tests move it on by hours
        self.last_activity = self.clock()
        self.print_log: list[tuple[str, str, str]] = []  # (time, what, where it went)
        self.kept_views: set[str] = set()  # installed screens of scanned tubes and boxes
        self.last_move: Move | None = None  # made on a tube's screen; `u` there takes it back

    # --- lifecycle ---------------------------------------------------------------------

    def on_mount(self) -> None:
        from tui.screens.sign_in import SignInScreen

        self.sub_title = self.settings.workstation
        self.push_screen(SignInScreen())
        self.set_interval(5, self._check_idle)
        if self._open is not None:
            self.call_after_refresh(self._open_database)
        else:
            self._database_opened()

    @property
    def database(self) -> OpenDatabase:
        """The open database (database work starts once it is: `run_db`). Raises what
        stopped it opening."""
        return self._opening.result()

    async def _opened(self) -> OpenDatabase:
        """Wait for the database on the UI thread's loop. Shielded: quitting cancels the
        wait, never the opening the thread reports to (whose error is then still read)."""
        opening = asyncio.wrap_future(self._opening)
        opening.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(opening)

    def _open_database(self) -> None:
        """Open in a daemon thread (quitting does not wait for a server slow to answer) and
        carry on, on the UI thread, once it is open."""

        def work() -> None:
            try:
                self._opening.set_result(self._open())
            except BaseException as error:
                self._opening.set_exception(error)

        threading.Thread(target=work, name="open the database", daemon=True).start()
        self.run_worker(self._when_open(), name="database opened", exit_on_error=False)

    async def _when_open(self) -> None:
        try:
            opened = await self._opened()
        except Exception as error:
            self.exit(return_code=getattr(error, "exit_code", 1))
            return
        if opened.created_admin is not None:
            from biobank.bootstrap import FIRST_ADMIN_HINT

            self.notify(FIRST_ADMIN_HINT, timeout=30)
        self._database_opened()

    def _database_opened(self) -> None:
        """An empty embedded inventory offers the demo cohort."""
        if self.settings.is_embedded:
            from tui.screens.first_run import offer_demo

            offer_demo(self)

    def opening_failure(self) -> BaseException | None:
        """What stopped the database opening, if it did (the app then exits with its code)."""
        opening = self._opening
        return opening.exception() if opening.done() else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.actor is not None or action not in self.SIGNED_IN_ACTIONS

    def _check_idle(self) -> None:
        idle = self.clock() - self.last_activity
        if self.actor is not None and idle > self.settings.idle_lock_minutes * 60:
            self.action_lock()
            self.notify("Locked after inactivity", severity="warning")

    # --- scans -------------------------------------------------------------------------

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded:
            self.last_activity = self.clock()
            is_scan = getattr(self.screen, "is_scan", None)  # a screen scanning one shape
            decision = self.detector.feed(event, event.key, event.character, event.time, is_scan)
            for held in decision.release:
                await super().on_event(held)
            if decision.scan is not None:
                self.handle_scan(decision.scan)
                return
            if decision.held:
                self._schedule_release()
                return
        await super().on_event(event)

    def _schedule_release(self) -> None:
        if self._release_timer is not None:
            self._release_timer.stop()
        self._release_timer = self.set_timer(
            self.detector.max_interval * 2, self._release_held, name="scan-release"
        )

    async def _release_held(self) -> None:
        for key in self.detector.flush():
            await super().on_event(key)

    def handle_scan(self, text: str) -> None:
        """A scan (or an ID typed into a scan box): sign in by badge, or resolve and route."""
        from biobank.services.identity import authenticate_badge
        from biobank.services.scan import resolve_scan

        if self.actor is None:
            self.run_db(
                lambda session: authenticate_badge(
                    session, badge=text, workstation=self.settings.workstation
                ),
                self.signed_in,
                authenticated=False,
            )
            return
        # what a scan now would open (no screen waits for scans; on a tube's screen, a box
        # proposes a move with its grid) is read with the scan: one worker round trip, the
        # view drawn once
        waiting = getattr(self.screen, "take_scan", None) is not None
        self.run_db(
            lambda session: resolve_scan(
                session,
                actor=self.actor,
                scanned=text,
                scanner_prefix=self.settings.scanner.prefix,
                views=not waiting,
            ),
            self.route_scan,
            lookup=True,
        )

    def route_scan(self, result: Scan) -> None:
        """The screen that is waiting for a scan takes it, a tube's screen a box as a move to
        propose; otherwise open what the scan names (with the view read with it, if any)."""
        from biobank.services import scan
        from tui.screens.specimen import SpecimenScreen

        if isinstance(self.screen, ModalScreen):
            self.bell()  # a question is open: answer it first
            self.notify("Answer the open question first; the scan was not used", severity="warning")
            return
        if isinstance(result, scan.MisreadScan):
            self.bell()
            self.notify(result.message, title="MISREAD", severity="error", timeout=10)
            return
        taker = getattr(self.screen, "take_scan", None)
        if taker is not None and taker(result):
            return
        if isinstance(self.screen, SpecimenScreen) and self.screen.take_scanned(result):
            return
        match result:
            case scan.SpecimenScan(specimen=specimen, view=view):
                self.open_specimen(specimen.accession_id, view)
            case scan.BoxScan(unit=unit, view=view):
                self.open_box(unit.barcode, view)
            case scan.UnitScan(unit=unit):
                from tui.screens.freezers import FreezerScreen

                self.push_screen(FreezerScreen(unit.barcode))
            case scan.ParticipantScan(participant_code=code):
                from tui.screens.participant import ParticipantScreen

                self.push_screen(ParticipantScreen(code))
            case scan.KitScan():
                from tui.screens.accession import AccessionScreen

                form = AccessionScreen()
                self.push_screen(form)
                self.call_after_refresh(form.take_scan, result)
            case _:
                self.notify(result.message, severity="warning")

    def open_specimen(self, accession_id: str, view: SpecimenView | None = None) -> None:
        """A tube's screen, for every screen that opens one (`open_view`)."""
        from tui.screens.specimen import SpecimenScreen

        self.open_view(SpecimenScreen, accession_id, view)

    def open_box(self, barcode: str, view: BoxView | None = None) -> None:
        """A box's screen, for every screen that opens one (`open_view`)."""
        from tui.screens.box import BoxScreen

        self.open_view(BoxScreen, barcode, view)

    def open_view(self, screen_class: type, key: str, view: Any) -> None:
        """A scanned tube or box, with its view read with the scan: in the screen shown if it
        is one; else in the one kept from the last scan, already built (building a screen is
        most of a view's time), brought back; else in a new screen, kept for the next scan.
        Without a view (a screen that waits for scans let this one pass), a new screen loads
        it: a kept one would show the last tube or box until the load arrived."""
        if view is None:
            self.push_screen(screen_class(key))
            return
        if isinstance(self.screen, screen_class):
            self.screen.open(key, view)
            return
        name = f"scanned-{screen_class.__name__}"
        if name not in self.kept_views:
            self.install_screen(screen_class(key, view), name)
            self.kept_views.add(name)
            self.push_screen(name)
            return
        kept = self.get_screen(name)
        if kept in self.screen_stack:  # it is under this screen: open another on top
            self.push_screen(screen_class(key, view))
            return
        kept.open(key, view)  # before it shows: never a moment of the last tube or box
        self.push_screen(kept)

    def open_withdrawal(self, participant_code: str, statements: list[str]) -> None:
        """The form recording a participant's consent withdrawal (`statements`: theirs)."""
        from tui.screens.withdrawal import WithdrawalScreen

        self.push_screen(WithdrawalScreen(participant_code, statements))

    def open_pull_list(self, *, instead_of_this: bool = False) -> None:
        """The pull list; `instead_of_this` when the screen shown is done with (a withdrawal
        recorded): Escape then leads back to the screen under it."""
        from tui.screens.pull_list import PullListScreen

        if instead_of_this:
            self.switch_screen(PullListScreen())
        else:
            self.push_screen(PullListScreen())

    def _drop_kept_views(self) -> None:
        """Someone else signs in: nothing of the last user's tubes and boxes is kept."""
        for name in self.kept_views:
            kept = self.get_screen(name)
            self.uninstall_screen(name)
            kept.remove()
        self.kept_views.clear()

    # --- database work -----------------------------------------------------------------

    def run_db(
        self,
        call: Callable[[Any], Any],
        done: Callable[[Any], None] | None = None,
        *,
        readonly: bool = False,
        lookup: bool = False,
        authenticated: bool = True,
        failed: Callable[[BiobankError], None] | None = None,
    ) -> None:
        """Run `call(session)` in a thread worker, in one unit of work (`readonly` and
        `lookup` as in `biobank.db.uow`); hand the result to `done` on the UI thread. Service
        errors go to `show_error`, and to `failed` (a form marks the field the error names)."""
        if authenticated and self.actor is None:
            return

        def work() -> None:
            try:
                with self.database.unit_of_work(readonly=readonly, lookup=lookup) as session:
                    result = call(session)
            except Exception as error:
                if not isinstance(error, BiobankError):  # a bug: say so, keep running
                    self.log.error(repr(error))
                    error = BiobankError(f"unexpected {type(error).__name__}: {error}")
                self.call_from_thread(self.show_error, error)
                if isinstance(error, STALE_VIEW):
                    self.call_from_thread(self.reload_view)
                if failed is not None:
                    self.call_from_thread(failed, error)
                return
            if done is not None:
                self.call_from_thread(done, result)  # a UI bug here fails the test run loudly

        if self._opening.done():
            self.run_worker(work, thread=True, group="db", exit_on_error=False)
            return

        async def when_open() -> None:
            """No thread waits for a database still opening: quitting would wait for it."""
            with suppress(Exception):  # the app exits with it (`_when_open`)
                await self._opened()
                self.run_worker(work, thread=True, group="db", exit_on_error=False)

        self.run_worker(when_open(), group="db", exit_on_error=False)

    def show_error(self, error: BiobankError) -> None:
        self.bell()
        self.notify(error.message, title="Not done", severity="error", timeout=10)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Every notice as plain text, its control characters escaped (`tui.text`): notices
        quote scans, names and files, so none is read as markup, whatever `markup` says."""
        super().notify(
            shown(message), title=title, severity=severity, timeout=timeout, markup=False
        )

    def reload_view(self) -> None:
        """Show what is in the database now (views that can reload have `action_refresh`)."""
        reload = getattr(self.screen, "action_refresh", None)
        if reload is not None:
            reload()

    # --- sign-in and navigation ----------------------------------------------------------

    def sign_in(self, username: str, pin: str) -> None:
        """A refused PIN is committed too (it counts towards the lockout), then shown."""
        from biobank.services import identity

        def attempted(attempt: SignInAttempt) -> None:
            try:
                self.signed_in(attempt.accepted())
            except BiobankError as error:
                self.show_error(error)

        self.run_db(
            lambda session: identity.sign_in(
                session, username=username, pin=pin, workstation=self.settings.workstation
            ),
            attempted,
            authenticated=False,
        )

    def signed_in(self, actor: Actor) -> None:
        """Back to the screens left under the lock, reloaded, if the same user unlocks;
        otherwise (first sign-in, or someone else) a fresh home screen."""
        from tui.screens.home import HomeScreen

        resuming = actor.username == self.locked_by
        self.actor, self.locked_by = actor, None
        self.last_activity = self.clock()
        if resuming:
            self.pop_screen()
            self.reload_view()
            return
        while len(self.screen_stack) > 2:
            self.pop_screen()
        self.switch_screen(HomeScreen())
        self._drop_kept_views()
        self.last_move = None
        if not gc.get_freeze_count():
            self.call_after_refresh(_settle_heap)

    def at_untouched_sign_in(self) -> bool:
        """Whether the sign-in screen shows with nothing typed in it, not even a first key held
        back by the scan detector: a question may then take the keys."""
        from tui.screens.sign_in import SignInScreen

        screen = self.screen
        return isinstance(screen, SignInScreen) and screen.untouched() and not self.detector.holding

    def action_lock(self) -> None:
        """The sign-in screen covers the user's screens; nothing of them shows or acts."""
        from tui.screens.sign_in import SignInScreen

        if self.actor is None:
            return
        self.locked_by, self.actor = self.actor.username, None
        self.push_screen(SignInScreen())

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_freezers(self) -> None:
        from tui.screens.freezers import FreezerScreen

        if self.actor is not None:
            self.push_screen(FreezerScreen())

    def action_accession(self) -> None:
        from tui.screens.accession import AccessionScreen

        if self.actor is not None:
            self.push_screen(AccessionScreen())

    def action_reconcile(self) -> None:
        from tui.screens.reconcile import ReconcileScreen

        if self.actor is not None:
            self.push_screen(ReconcileScreen())

    def action_print_queue(self) -> None:
        from tui.screens.print_queue import PrintQueueScreen

        if self.actor is not None:
            self.push_screen(PrintQueueScreen())

    def action_pull_list(self) -> None:
        if self.actor is not None:
            self.open_pull_list()

    def action_receive_shipment(self) -> None:
        from tui.screens.receipt import ReceiptScreen

        if self.actor is not None and not isinstance(self.screen, ReceiptScreen):
            self.push_screen(ReceiptScreen())

    def action_shipment_return(self) -> None:
        from tui.screens.shipment_return import ReturnScreen

        if self.actor is not None and not isinstance(self.screen, ReturnScreen):
            self.push_screen(ReturnScreen())

    def action_pick_request(self) -> None:
        from tui.screens.pick_list import PickListScreen

        if self.actor is not None and not isinstance(self.screen, PickListScreen):
            self.push_screen(PickListScreen())

    def action_export(self) -> None:
        """PIs and admins: others are told so at once rather than after filling in the form."""
        from biobank.domain.permissions import Permission, require
        from tui.screens.export import ExportScreen

        if self.actor is None or isinstance(self.screen, ExportScreen):
            return
        try:
            require(self.actor, Permission.export)
        except PermissionDenied as error:
            self.show_error(error)
            return
        self.push_screen(ExportScreen())


def run(*, settings: Settings, database: OpenDatabase | Callable[[], OpenDatabase]) -> None:
    """Run the workstation; a database that could not be opened is raised here, once the
    screen is given back, for the entry point to report."""
    app = BiobankApp(settings=settings, database=database)
    app.run()
    failure = app.opening_failure()
    if failure is not None:
        raise failure
