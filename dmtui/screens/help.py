"""What dmtui does and which key does what, for a first-time user."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# dmtui: Dual-Margin curation of preference data

**The loop.** *Dataset* (1) shows what loaded and every rejected row (`b`).
*Score* (3) computes margins with your models: **external** (a reward model's score of
chosen minus rejected), **implicit** (log pi_1 - log pi_0 summed over response tokens;
pi_1 is pi_0 after DPO on a small seed set) and **IFD**. *Curate* (2) fuses them and
keeps the pairs both sources trust: **DM-MUL** (strict) or **DM-ADD** (lenient), or a
baseline; the plots and the table follow every keystroke. *Run* (4) exports the subset
with a manifest that rebuilds it byte for byte, and trains DPO on it in a subprocess.

**Spot-check.** `B` walks the lowest margins of the TOP/MID/BOT source: mislabeled and
toxic pairs gather there. Flag `t` toxic, `l` mislabeled, `f` other (with a note),
`x` exclude from every selection, `s` swap chosen and rejected, `n` note, `u` undo,
`]` / `[` next / previous. Every annotation is saved the moment you press the key.

| key | where | does |
|---|---|---|
| `1` `2` `3` `4` | anywhere | Dataset, Curate, Score, Run |
| `b` | anywhere | bad rows |
| `Enter` | examples | open the pair |
| `v` / `o` / `O` / `/` | curate | next plot / sort column / reverse / search |
| `B` | curate | spot-check BOT |
| `Esc` | anywhere | cancel loading, scoring, exporting, training |
| `Ctrl+P` | anywhere | every action by name |
| `?` | anywhere | this help |
| `q` | anywhere | quit (nothing is lost: annotations, scores and settings are saved) |

Everything here can be reproduced headless: `dmtui info`, `dmtui score`,
`dmtui select`, `dmtui export`, `dmtui train`.
"""


class HelpScreen(ModalScreen):
    CSS_PATH = Path(__file__).with_name("help.tcss")
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        yield Markdown(HELP, id="help-text")
