"""Freezers: the storage tree with the free positions at every level; Enter on a box opens its
grid.

The tree is read one level at a time, as branches open: a freezer of 12,000 boxes shows its
shelves at once instead of loading every box first.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from biobank.services.storage import UnitBranch, storage_children, storage_path
from biobank.terminal_text import shown
from tui.screens.base import WorkScreen

Levels = dict[str | None, list[UnitBranch]]  # the units in each opened unit (None: the top)


def branch_label(branch: UnitBranch) -> Text:
    unit = branch.unit
    label = Text.assemble((shown(unit.name), "bold"), "  ", (unit.barcode, "dim"))
    if branch.capacity:
        style = "green" if branch.free else "red"
        label.append(f"  {branch.free}/{branch.capacity} free", style=style)
    return label


class FreezerScreen(WorkScreen):
    BINDINGS = [Binding("r", "refresh", "Refresh", id="refresh_freezers")]  # noqa: RUF012

    def __init__(self, barcode: str | None = None) -> None:
        super().__init__()
        self.barcode = barcode
        self.nodes: dict[str, TreeNode[UnitBranch]] = {}
        self.loaded: set[str | None] = set()

    def compose_body(self) -> ComposeResult:
        yield Static("Freezers", classes="title")
        tree: Tree[UnitBranch] = Tree("Storage", id="storage-tree")
        tree.show_root = False
        yield tree
        yield Static("Enter opens a branch or a box · Space opens or closes", classes="muted")

    def on_mount(self) -> None:
        self.query_one(Tree).focus()

    def on_screen_resume(self) -> None:
        self.action_refresh()  # back from a box: its free count may have changed

    def action_refresh(self) -> None:
        """Read again the top level and every open branch; keep the cursor where it was."""
        cursor = self.query_one(Tree).cursor_node
        at = cursor.data.unit.barcode if cursor is not None and cursor.data else self.barcode
        opened = [barcode for barcode, node in self.nodes.items() if node.is_expanded]
        if not opened and self.barcode:
            opened = [self.barcode]
        actor = self.app.actor

        def load(session) -> Levels:
            way = storage_path(session, actor=actor, barcode=at)[:-1] if at else []
            parents = dict.fromkeys([None, *(u.barcode for u in way), *opened])
            return {p: storage_children(session, actor=actor, parent=p) for p in parents}

        self.app.run_db(load, lambda levels: self.show(levels, at), readonly=True)

    def show(self, levels: Levels, at: str | None) -> None:
        tree = self.query_one(Tree)
        tree.clear()
        self.nodes, self.loaded = {}, set()
        self._grow(tree.root, None, levels)
        first = tree.root.children[0] if tree.root.children else None
        tree.call_after_refresh(tree.move_cursor, self.nodes.get(at, first))

    def _grow(self, node: TreeNode[UnitBranch], parent: str | None, levels: Levels) -> None:
        """Add `parent`'s units under `node`, and theirs when `levels` has them (opened)."""
        self.loaded.add(parent)
        for branch in levels[parent]:
            barcode = branch.unit.barcode
            child = node.add(
                branch_label(branch),
                data=branch,
                expand=barcode in levels,
                allow_expand=branch.units_inside > 0,
            )
            self.nodes[barcode] = child
            if barcode in levels:
                self._grow(child, barcode, levels)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[UnitBranch]) -> None:
        node, branch = event.node, event.node.data
        if branch is None or branch.unit.barcode in self.loaded:
            return
        barcode = branch.unit.barcode
        self.loaded.add(barcode)

        def grown(levels: Levels) -> None:
            if self.nodes.get(barcode) is node:  # not replaced by a refresh meanwhile
                self._grow(node, barcode, levels)

        self.app.run_db(
            lambda session: {
                barcode: storage_children(session, actor=self.app.actor, parent=barcode)
            },
            grown,
            readonly=True,
        )

    def on_tree_node_selected(self, event: Tree.NodeSelected[UnitBranch]) -> None:
        branch = event.node.data
        if branch is not None and branch.unit.holds_specimens:
            self.app.open_box(branch.unit.barcode)
