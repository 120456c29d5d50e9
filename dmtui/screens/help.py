"""What dmtui does and which key does what where, for a first-time user."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# dmtui: Dual-Margin curation of preference data

**Close this help with `Esc`, `q` or `?`.** Scroll with `↑` `↓`, `PgUp` `PgDn`,
`Home` `End`.

**The loop.** *Dataset* (`1`) shows what loaded and every rejected row.
*Score* (`3`) computes margins with your models: **external** (a reward model's
score of chosen minus rejected), **implicit** (log pi_1 - log pi_0 over the
response; pi_1 is pi_0 after DPO on a small seed set) and **IFD**. *Curate*
(`2`) fuses them and keeps the pairs both sources trust: **DM-MUL** (strict) or
**DM-ADD** (lenient), or a baseline. *Run* (`4`) exports the subset with a
manifest that rebuilds it byte for byte, and trains DPO on it.

## Fields and keys

A text field takes every key you type while it has focus (it shows a bar at
its left and a bright background); a digit typed into the budget is a digit.
So the one-letter keys below work when **no field has focus**: press `Esc`
to leave a field first. `Tab` / `Shift+Tab` move between fields and buttons.
A field's text is kept when you enter it: typing adds at the cursor.

## Anywhere (outside a field)

| key | does |
|---|---|
| `1` `2` `3` `4` | Dataset, Curate, Score, Run tab |
| `S` | start scoring with the Score tab's settings |
| `E` | export the current selection (Run tab's folder) |
| `T` | train on the latest export; asks first (`Enter`/`y` yes) |
| `X` | stop work: scoring stops at the next chunk; training asks |
| `R` | compare the workspace's training runs |
| `b` | every rejected row (Enter shows the raw line) |
| `?` | this help |
| `q` | quit; asks first while scoring or training runs (`q` again while it stops: kill it) |

## From anywhere, a field included

| key | does |
|---|---|
| `Esc` | leave the field (or close a dialog); never stops work |
| `Ctrl+P` | every action by name ("start", "export", "train"…) |
| `Ctrl+Q` | quit, as `q` |

## Curate tab

| key | where | does |
|---|---|---|
| `v` / `o` / `O` | outside a field | next plot / next sort (score ↓, margins ↑) / reverse |
| `/` | outside a field | search text, pair_id or the data's own columns (an `id`) |
| `c` | outside a field | show the data's own columns (id, topic, …) in the table |
| `B` | outside a field | spot-check a BOT region, lowest first (the `bot:` filter, or a source you pick) |
| `Enter` | examples table | open the pair |
| `↑` `↓` `PgUp` `PgDn` `g` `G` | examples table | move, first, last |

The controls on the left: **mode** (DM-MUL, DM-ADD, TOP/MID/BOT of one source,
Random, Low-Gap), **budget** (a count `600`, a fraction `0.1` or `10%`) and per
source **M1 / M2**, DM-MUL's clip: margins at or below M1 count as 0, at or
above M2 as 1 (`auto`: M2 from the data). The filter above the table shows
all / selected / flagged / excluded pairs, or the TOP/MID/BOT region of a
source (`bot:external`).

**State column** of the examples table:
`✓` selected · `✂` cut by the TOP/MID/BOT outlier trim · `⚑` flagged · `✗` excluded ·
`⇄` chosen and rejected swapped. DM-MUL's score column shows the fused log-odds.

## Pair view (Enter on a pair)

| key | does |
|---|---|
| `t` / `l` / `f` | flag toxic / mislabeled / other (with a note) |
| `x` | exclude from every selection |
| `s` | swap chosen and rejected |
| `n` | note; `u` undo; `]` `[` next / previous pair |
| `p` | the whole prompt / its last turn only |
| `↓` `↑` `PgDn` `PgUp` | scroll both replies together |
| `Esc` / `q` | back |

Every annotation is saved the moment you press the key.

## Run tab

**Export** (`E` or the button) writes the selection and `manifest.json` to the
folder shown. **Train** (`T` asks first; the button starts at once) runs
`dmtui train` on the latest export in its own process: the charts show loss,
reward margin, reward accuracy and learning rate against step, the log says
what happened. Training options default to `dmtui train`'s (the paper's);
the field takes more, split like a shell line (`--lr 1e-6 --epochs 1`).
`X` stops training at the next step with a checkpoint, after a yes.

## Score tab

Models are folders or hub ids. Without pi_1 a seed DPO of pi_0 on a small
seed set D0 makes it; the row shows the size it will use (`auto: 10% = 400`).
Scoring runs as its own process (`dmtui score --jsonl`): `X` stops it at the
next chunk, finished chunks are kept and the next run resumes.

Everything here can be done headless: `dmtui info`, `score`, `select`,
`export`, `train`, `runs`.
"""


class HelpScreen(ModalScreen):
    CSS_PATH = Path(__file__).with_name("help.tcss")
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-text"):
            yield Markdown(HELP)

    def on_mount(self) -> None:
        self.query_one("#help-text").focus()
