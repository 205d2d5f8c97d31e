"""Sign in with username and PIN, or by scanning a badge. The key bar shows only what works
before sign-in (the app's other keys need someone signed in)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Button, Header, Input, Label

from tui.widgets.key_bar import KeyBar


class SignInScreen(Screen):
    DEFAULT_CSS = """
    SignInScreen { align: center middle; }
    #sign-in { width: 46; height: auto; border: round $primary; padding: 1 2; }
    #sign-in Input { margin-bottom: 1; }
    """

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="sign-in"):
            yield Label("Sign in, or scan your badge")
            yield Input(placeholder="username", id="username")
            yield Input(placeholder="PIN", password=True, id="pin")
            yield Button("Sign in", id="submit", variant="primary")
        yield KeyBar()

    def is_scan(self, text: str) -> bool:
        """Whether a fast burst is a badge scan: badges are issued upper case (`add_user` stores
        them so), usernames are lower case. A burst with a lower-case letter is a name typed
        fast, and goes to the field as typed."""
        return not any(character.islower() for character in text)

    def untouched(self) -> bool:
        """Nothing typed yet: a question may take the keys (once typing has begun, the next
        letters belong to a name or a PIN)."""
        return not any(box.value for box in self.query(Input))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "username":
            self.query_one("#pin", Input).focus()
        else:
            self.submit()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        self.submit()

    def submit(self) -> None:
        username = self.query_one("#username", Input).value
        pin_box = self.query_one("#pin", Input)
        pin, pin_box.value = pin_box.value, ""
        self.app.sign_in(username, pin)
