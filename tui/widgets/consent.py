"""Consent as the participant and specimen screens show it: a one-line badge, each statement's
state, and a withdrawal in words."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from biobank.services.consent import ConsentStatusRead, WithdrawalRead
from biobank.terminal_text import shown

STATE_MARK = {"granted": "✓", "refused": "✗", "withdrawn": "⊘", "not_asked": "–"}
STATE_STYLE = {"granted": "green", "refused": "red", "withdrawn": "bold red", "not_asked": "dim"}


def short_codes(codes: Iterable[str]) -> dict[str, str]:
    """A statement's first word (FUTURE_RESEARCH → FUTURE), unless another shares it."""
    codes = list(codes)
    firsts = [code.split("_")[0] for code in codes]
    return {
        code: first if firsts.count(first) == 1 else code
        for code, first in zip(codes, firsts, strict=True)
    }


def withdrawal_words(withdrawal: WithdrawalRead) -> str:
    scope = withdrawal.statement or "all uses"
    return f"{scope} · {withdrawal.disposition.value}, {withdrawal.withdrawn_on}"


def consent_badge(status: ConsentStatusRead) -> Text:
    """One line: each statement's short code and mark, or the withdrawal of everything."""
    gone = status.full_withdrawal
    if gone is not None:
        return Text(f"Consent: WITHDRAWN ({withdrawal_words(gone)})", style="bold red")
    if not status.signatures and not status.withdrawals:
        return Text("Consent: none on record", style="bold yellow")
    short = short_codes(s.code for s in status.statements)
    badge = Text("Consent:")
    for s in status.statements:
        badge.append(f" {short[s.code]} ")
        badge.append(STATE_MARK[s.state.value], style=STATE_STYLE[s.state.value])
    return badge


def consent_lines(status: ConsentStatusRead) -> Text:
    """Each statement's state and since when, then the signatures and withdrawals behind it."""
    width = max((len(s.code) for s in status.statements), default=0)
    lines = []
    for s in status.statements:
        state = s.state.value
        line = Text(f"{STATE_MARK[state]} ", style=STATE_STYLE[state])
        line.append(f"{s.code:<{width}}  {state.replace('_', ' '):<9}")
        if s.since:
            line.append(f"  since {s.since}")
        lines.append(line)
    for signed in status.signatures:
        by = f" (recorded by {signed.recorded_by})" if signed.recorded_by else ""
        lines.append(
            Text(f"Signed {signed.document} v{signed.version} on {signed.signed_on}{by}", "dim")
        )
    for w in status.withdrawals:
        reason = f": {shown(w.reason)}" if w.reason else ""
        lines.append(
            Text(
                f"Withdrawn {w.statement or 'all statements'} on {w.withdrawn_on}, requested by "
                f"{shown(w.requested_by)}, {w.disposition.value}{reason}",
                style="red",
            )
        )
    if not status.signatures and not status.withdrawals:
        lines.append(Text("No signed consent on record.", style="bold yellow"))
    return Text("\n").join(lines)
