"""The curation session: choices parsed per control, defaults and where values came from,
the command line following the workspace, and the options that cannot apply."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.curation.session import (
    CurationSession,
    SelectionChoices,
    default_fused,
    merge_choices,
    parse_choices,
    parse_mode,
    parse_trim,
    used_controls,
)
from core.errors import DmtuiError
from core.selection.selector import SelectionParams, overlap, select
from core.store.annotations import AnnotationStore
from core.store.margin_sources import ResolvedMargins
from core.store.workspace import Workspace

SOURCES = ["external", "implicit", "ifd"]


@pytest.mark.parametrize("text", ["dm-mul", "DM-MUL", "Dm-Mul", "dm_mul", "DM-MUL (strict)", " dm mul "])
def test_mode_names_match_the_apps_labels_in_any_case(text):
    assert parse_mode(text) == "dm-mul"
    assert parse_mode("Low-Gap") == "low-gap" and parse_mode("RANDOM") == "random"


def test_unknown_mode_names_the_choices():
    with pytest.raises(DmtuiError, match="unknown mode") as error:
        parse_mode("sideways")
    assert "low-gap" in error.value.hint


@pytest.mark.parametrize(("text", "value"), [("1%", 0.01), ("0.5%", 0.005), ("0", 0.0), ("0.2", 0.2)])
def test_trim(text, value):
    assert parse_trim(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["50%", "-1%", "x", "0.5", ""])
def test_bad_trim(text):
    with pytest.raises(DmtuiError, match="cannot use the trim"):
        parse_trim(text)


def test_defaults_fuse_everything_but_ifd_and_parse_to_the_papers_params():
    parsed = parse_choices(SelectionChoices(), SOURCES)
    assert parsed.ok and parsed.params.sources == ("external", "implicit")
    assert parsed.params.m1_for("external") == -2.0 and parsed.params.m2_for("implicit") == "auto"
    assert parsed.params.budget == 0.1 and parsed.drop_flagged == ("toxic", "mislabeled")
    assert default_fused(["ifd"]) == () and default_fused(["rm_a", "rm_b", "ifd"]) == ("rm_a", "rm_b")


def test_each_invalid_control_is_named_and_nothing_is_selected():
    choices = SelectionChoices(budget="150%", m1={"external": "5"}, m2={"external": "3", "implicit": "x"},
                               weights={"implicit": "-1"})
    parsed = parse_choices(choices, SOURCES)
    assert parsed.params is None
    controls = {p.control for p in parsed.problems}
    assert controls == {"budget", "m2:external", "m2:implicit", "weight:implicit"}
    assert "M2 (3) must be greater than M1 (5)" in parsed.problem_for("m2:external").message
    assert "4 settings cannot be used" in parsed.error().message


def test_controls_the_mode_ignores_are_not_checked():
    parsed = parse_choices(SelectionChoices(mode="top", m1={"external": "nonsense"}), SOURCES)
    assert parsed.ok and parsed.params.source == "external"


@pytest.mark.parametrize(("mode", "sources", "needs"), [
    ("low-gap", ["external"], "needs the ifd margin"),
    ("dm-mul", [], "no margin sources"),
    ("top", [], "no margin sources"),
    ("dm-add", ["ifd"], "there is only ifd"),
])
def test_modes_without_their_margin_say_which_margin_they_need(mode, sources, needs):
    parsed = parse_choices(SelectionChoices(mode=mode), sources)
    assert not parsed.ok and needs in parsed.problem_for("mode").message


def test_random_needs_no_margin_and_selects_from_the_pair_count():
    parsed = parse_choices(SelectionChoices(mode="random", budget="4"), [])
    assert parsed.ok
    selection = select({}, parsed.params, tie_break=np.arange(10, dtype=np.uint64))
    assert selection.selected == 4 and selection.total == 10 and selection.score is None


def test_unknown_source_names_are_errors():
    parsed = parse_choices(SelectionChoices(m1={"foo": "1"}, fuse=("external", "bar")), SOURCES)
    assert {p.control for p in parsed.problems} == {"m1:foo", "fuse"}


def test_dm_mul_of_one_source_says_it_is_a_clipped_top():
    parsed = parse_choices(SelectionChoices(fuse=("external",)), SOURCES)
    assert parsed.ok and any("clipped to [M1, M2]" in note for note in parsed.notes)


def test_weights_reach_the_params_and_all_zero_is_refused():
    parsed = parse_choices(SelectionChoices(weights={"implicit": "0.5"}), SOURCES)
    assert parsed.params.weight_for("implicit") == 0.5 and parsed.params.weight_for("external") == 1.0
    zero = parse_choices(SelectionChoices(weights={"external": "0", "implicit": "0"}), SOURCES)
    assert "weight 0" in zero.problems[0].message


def test_merge_names_where_each_value_came_from():
    stored = SelectionChoices(budget="35", m2={"external": "4"})
    choices, origins = merge_choices(stored, {"mode": "dm-add", "m2": {"implicit": "5"}})
    assert (choices.mode, choices.budget, dict(choices.m2)) == ("dm-add", "35", {"external": "4", "implicit": "5"})
    assert origins["mode"] == "option" and origins["budget"] == "workspace" and origins["trim"] == "default"
    assert origins["m2:external"] == "workspace" and origins["m2:implicit"] == "option"
    ignored, origins = merge_choices(None, {})
    assert ignored == SelectionChoices() and set(origins.values()) == {"default"}


def test_stored_choices_of_the_wrong_shape_or_for_missing_sources_are_dropped():
    stored = {"mode": ["x"], "budget": 25, "m1": {"external": -1.5, "gone": 3, "implicit": True},
              "fuse": ["implicit", "gone"], "drop_flagged": ["evil"]}
    choices = SelectionChoices.from_json(stored, ["external", "implicit"])
    assert choices.mode == "dm-mul" and choices.budget == "25" and dict(choices.m1) == {"external": "-1.5"}
    assert choices.fuse == ("implicit",) and choices.drop_flagged is None
    assert SelectionChoices.from_json(choices.to_json(), ["external", "implicit"]) == choices


def test_saturated_ties_break_by_standardised_margins_only_when_asked():
    # Pairs 0-3 are at or above M2 in both sources: the paper's formula ties them at 1.
    external = np.array([9.0, 5.0, 7.0, 5.0, 0.0, -1.0])
    implicit = np.array([5.0, 9.0, 5.0, 5.0, 1.0, 0.0])
    margins = {"external": external, "implicit": implicit}
    keys = np.array([4, 3, 2, 1, 5, 6], dtype=np.uint64)
    paper = select(margins, SelectionParams(budget=2, m2=5.0), tie_break=keys)
    assert paper.indices.tolist() == [2, 3]  # smallest pair_ids among the tied
    broken = select(margins, SelectionParams(budget=2, m2=5.0, saturated_ties="margin-sum"), tie_break=keys)
    assert broken.indices.tolist() == [0, 1]  # the furthest above M2 overall
    assert np.allclose(broken.score, paper.score) and broken.log_odds is not None


def test_trimmed_pairs_are_marked():
    margin = np.arange(200, dtype=float)
    selection = select({"external": margin}, SelectionParams(mode="bot", source="external", budget=3))
    assert selection.trimmed.sum() == 4 and selection.trimmed[[0, 1, 198, 199]].all()
    assert selection.indices.tolist() == [2, 3, 4]


def test_overlaps_with_each_top_at_the_same_budget(tmp_path):
    from core.data.loading import load_dataset

    rows = [{"prompt": f"p{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(50)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_dataset(str(path))
    rng = np.random.default_rng(0)
    resolved = ResolvedMargins({"external": rng.normal(size=50), "implicit": rng.normal(size=50)})
    session = CurationSession(dataset, resolved)
    selection = session.select(SelectionParams(mode="top", source="external", budget=10, trim=0.0))
    overlaps = session.top_overlaps(selection)
    assert set(overlaps) == {"top:implicit"}  # TOP of external is the selection itself
    fused = session.select(SelectionParams(budget=10))
    assert set(session.top_overlaps(fused)) == {"top:external", "top:implicit"}


def test_the_kept_top_rankings_follow_the_annotations_budget_and_trim(tmp_path):
    """The overlap counts keep each source's TOP ranking between edits: after an exclusion,
    a swap, a budget or a trim change they are those of a TOP selected afresh. With two
    equal sources, TOP of one is the other's: every pair is shared, whatever changed."""
    from core.data.loading import load_dataset
    from core.store.annotations import Annotation

    rows = [{"prompt": f"p{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(60)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_dataset(str(path))
    external = np.random.default_rng(1).normal(size=60)
    session = CurationSession(dataset, ResolvedMargins({"external": external, "implicit": external.copy()}))
    pair_ids = session.pair_ids.to_pylist()

    def check(params: SelectionParams) -> None:
        selection = session.select(params)
        top = session.select(SelectionParams(mode="top", source="external", budget=params.budget, trim=params.trim))
        assert session.top_overlaps(selection) == {"top:external": overlap(selection, top)}
        assert overlap(selection, top).count == selection.selected == top.selected

    check(SelectionParams(mode="top", source="implicit", budget=12, trim=0.0))
    best = int(np.argmax(external))
    for change in (dict(excluded=True), dict(swapped=True), dict()):
        session.annotations.set(best, Annotation(pair_ids[best], **change))
        check(SelectionParams(mode="top", source="implicit", budget=12, trim=0.0))
    for budget, trim in ((30, 0.0), (0.5, 0.0), (0.5, 0.2), (12, 0.2)):
        check(SelectionParams(mode="top", source="implicit", budget=budget, trim=trim))
    fused = session.select(SelectionParams(mode="dm-add", budget=0.3))
    assert session.top_overlaps(fused)["top:implicit"] == overlap(fused, session.select(
        SelectionParams(mode="top", source="implicit", budget=0.3)))



def test_export_plans_count_flags_as_the_masks_say_after_every_annotation(tmp_path):
    """The plan's counts come from a byte per pair kept between edits: after each change of
    flags, swaps or exclusions, and for every set of dropped flags, they are those of the
    masks themselves."""
    from core.data.loading import load_dataset
    from core.store.annotations import FLAGS, Annotation

    rows = [{"prompt": f"p{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(80)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_dataset(str(path))
    rng = np.random.default_rng(2)
    session = CurationSession(dataset, ResolvedMargins({"external": rng.normal(size=80)}))
    pair_ids = session.pair_ids.to_pylist()
    masks = session.annotations
    drops = [(), ("toxic",), ("mislabeled",), ("toxic", "mislabeled"), FLAGS]
    for step in range(30):
        index = int(rng.integers(80))
        flags = tuple(flag for flag in FLAGS if rng.random() < 0.5)
        masks.set(index, Annotation(pair_ids[index], flags=flags, swapped=bool(rng.random() < 0.4),
                                    excluded=bool(rng.random() < 0.2)))
        selection = session.select(SelectionParams(mode="top", source="external", budget=0.6))
        chosen = selection.indices
        for drop in drops:
            plan = session.plan_export(selection, drop)
            dropping = masks.dropped(drop)[chosen]
            assert (plan.dropped, plan.written) == (int(dropping.sum()), int((~dropping).sum())), (step, drop)
            assert plan.spared == int(masks.spared(drop)[chosen].sum())
            assert plan.flagged_written == {f: int(masks.flags[f][chosen[~dropping]].sum()) for f in FLAGS}
            assert plan.flagged_dropped == {f: int(masks.flags[f][chosen[dropping]].sum()) for f in FLAGS}
        assert session.flag_counts(chosen) == {f: int(masks.flags[f][chosen].sum()) for f in FLAGS}

# The command line ------------------------------------------------------------------

def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmtui", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(5)
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "sc": int(rng.integers(1, 10)),
             "sr": int(rng.integers(1, 10)), "im": float(rng.normal(0, 3))} for i in range(40)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(("typed", "shown"), [("10%", "10%"), ("0.1", "10%"), ("0.5%", "0.5%"), ("0.07", "7%"),
                                              ("1", "1"), ("6,000", "6000")])
def test_a_budget_is_shown_as_a_count_or_a_percentage(typed, shown):
    """Review 1 item 18: '10%' read back as 'budget 0.1' in the settings line and the Run
    tab's plan."""
    parsed = parse_choices(SelectionChoices(mode="top", budget=typed, source="external"), SOURCES)
    assert used_controls(parsed.params)["budget"] == shown


MARGINS = ("--margin", "external=sc,sr", "--margin", "implicit=im")


def test_cli_follows_the_workspaces_saved_selection_options_override_and_defaults_ignore(tmp_path, data):
    workspace = Workspace.open_or_create(str(data))  # data.dmtui, found from the dataset
    workspace.update_settings("margins", list(MARGINS[1::2]))
    workspace.update_settings("curation", {"mode": "top", "source": "implicit", "budget": "7", "trim": "0"})
    saved = json.loads(run_cli("select", data, "--json").stdout)
    assert saved["counts"]["selected"] == 7 and saved["params"]["mode"] == "top"
    assert saved["settings"]["budget"] == {"value": "7", "from": "workspace"}
    assert saved["settings"]["source"] == {"value": "implicit", "from": "workspace"}
    flagged = json.loads(run_cli("select", workspace.root, "--budget", "5", "--json").stdout)
    assert flagged["counts"]["selected"] == 5 and flagged["settings"]["budget"]["from"] == "option"
    assert flagged["params"]["mode"] == "top"
    defaults = json.loads(run_cli("select", data, "--defaults", "--json").stdout)
    assert defaults["params"]["mode"] == "dm-mul" and defaults["counts"]["selected"] == 4
    assert defaults["settings"]["mode"]["from"] == "default"
    assert defaults["settings"]["budget"] == {"value": "10%", "from": "default"}
    text = run_cli("select", data).stdout
    assert "budget 7 (workspace)" in text and "source implicit (workspace)" in text


def test_cli_names_invalid_saved_settings_and_misspelled_sources(tmp_path, data):
    Workspace.open_or_create(str(data)).update_settings("curation", {"budget": "150%"})
    result = run_cli("select", data, *MARGINS)
    assert result.returncode == 1 and "budget" in result.stderr and "150%" in result.stderr
    result = run_cli("select", data, *MARGINS, "--defaults", "--m1", "foo=1")
    assert result.returncode == 1 and "no margin source 'foo'" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_accepts_the_apps_mode_labels(data):
    result = run_cli("select", data, *MARGINS, "--mode", "DM-MUL", "--json")
    assert result.returncode == 0, result.stderr and json.loads(result.stdout)["params"]["mode"] == "dm-mul"


def test_manifest_with_selection_or_export_options_is_refused(tmp_path, data):
    out = tmp_path / "out"
    assert run_cli("export", data, *MARGINS, "--out", out).returncode == 0
    result = run_cli("export", "--manifest", out / "manifest.json", "--out", tmp_path / "again", "--mode", "top",
                     "--budget", "5", "--drop-flagged", "none")
    assert result.returncode == 1
    assert "--mode, --budget, --drop-flagged cannot apply" in result.stderr
    assert not (tmp_path / "again").exists()


def test_select_and_export_make_a_new_workspace_but_not_for_a_file_that_loads_nothing(tmp_path, data):
    result = run_cli("select", data, *MARGINS, "--workspace", tmp_path / "new-ws")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "new-ws" / "workspace.json").is_file()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "good": "a", "bad": "b"}) + "\n")
    result = run_cli("export", bad, "--mode", "random", "--workspace", tmp_path / "bad-ws", "--out", tmp_path / "o")
    assert result.returncode == 1 and "no usable pairs" in result.stderr
    assert not (tmp_path / "bad-ws").exists() and not (tmp_path / "o").exists()


def test_random_exports_without_margins(tmp_path, data):
    result = run_cli("export", data, "--mode", "random", "--budget", "6", "--out", tmp_path / "r", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["selected"] == 6


def test_cli_export_drops_flagged_pairs_and_lists_them(tmp_path, data):
    workspace = Workspace.open_or_create(str(data), tmp_path / "ws")
    chosen = json.loads(run_cli("select", tmp_path / "ws", *MARGINS, "--json").stdout)
    top = run_cli("export", tmp_path / "ws", *MARGINS, "--out", tmp_path / "plain", "--json")
    ids = json.loads((tmp_path / "plain" / "manifest.json").read_text())["selected_pair_ids"]
    assert json.loads(top.stdout)["selected"] == chosen["counts"]["selected"] == len(ids)
    with AnnotationStore(workspace.annotations_path) as store:
        store.toggle_flag(ids[0], "toxic")
        store.update(ids[1], flags=("other",), note="check the tone")
    warned = run_cli("select", tmp_path / "ws", *MARGINS)
    assert "selected pairs carry flags: toxic 1, other 1" in warned.stdout
    result = run_cli("export", tmp_path / "ws", *MARGINS, "--drop-flagged", "toxic", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert f"dropped 1 flagged pairs: {ids[0]} (toxic)" in result.stdout
    assert "keeps flagged pairs: other 1" in result.stdout
    written = [json.loads(line)["pair_id"] for line in (tmp_path / "out" / "data.jsonl").read_text().splitlines()]
    assert ids[0] not in written and ids[1] in written
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["annotations"]["flags"] == {ids[0]: ["toxic"], ids[1]: ["other"]}
    assert manifest["annotations"]["notes"] == {ids[1]: "check the tone"}


def test_cli_export_keeps_a_mislabeled_pair_the_curator_swapped(tmp_path, data):
    """Review 1 item 7: the pair with the lowest margin, flagged mislabeled and swapped, is
    selected and written (the swap fixed it), by default and as --help says."""
    workspace = Workspace.open_or_create(str(data), tmp_path / "ws")
    pairs = workspace.load().pairs["pair_id"].to_pylist()
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    worst = pairs[min(range(len(rows)), key=lambda i: (rows[i]["sc"] - rows[i]["sr"], pairs[i]))]
    with AnnotationStore(workspace.annotations_path) as store:
        store.update(worst, flags=("mislabeled",), swapped=True)
    options = (*MARGINS, "--mode", "top", "--source", "external", "--budget", "5", "--trim", "0")
    assert "(but keeps the swapped mislabeled ones: 1)" in run_cli("select", tmp_path / "ws", *options).stdout
    result = run_cli("export", tmp_path / "ws", *options, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert f"kept mislabeled pairs the curator swapped (the swap fixed them): {worst}" in result.stdout
    assert "dropped" not in result.stdout and "warning" not in result.stdout
    written = {json.loads(line)["pair_id"]: json.loads(line)
               for line in (tmp_path / "out" / "data.jsonl").read_text().splitlines()}
    assert len(written) == 5 and worst in written
    original = rows[pairs.index(worst)]
    assert (written[worst]["chosen"], written[worst]["sc"], written[worst]["sr"]) == (
        original["rejected"], original["sr"], original["sc"])
    assert "swapped is kept" in " ".join(run_cli("export", "--help").stdout.split())


def test_annotations_command_lists_flags_notes_exclusions_and_swaps(tmp_path, data):
    workspace = Workspace.open_or_create(str(data))
    ids = workspace.load().pairs["pair_id"].to_pylist()
    with AnnotationStore(workspace.annotations_path) as store:
        store.update(ids[5], flags=("toxic", "mislabeled"), note="[bold]slur[/] in chosen")
        store.update(ids[2], excluded=True)
        store.update("ffffffffffffffff", swapped=True)  # a pair the dataset no longer has
    listed = json.loads(run_cli("annotations", data, "--json").stdout)
    assert listed["counts"] == {"annotated": 3, "toxic": 1, "mislabeled": 1, "other": 0, "notes": 1, "excluded": 1,
                                "swapped": 1, "not_in_data": 1}
    rows = [(r["row"], r["flags"], r["note"]) for r in listed["annotations"]]
    assert rows == [(2, [], ""), (5, ["toxic", "mislabeled"], "[bold]slur[/] in chosen"), (None, [], "")]
    text = run_cli("annotations", workspace.root).stdout
    assert "[bold]slur[/] in chosen" in text and "toxic, mislabeled" in text and "not in data" in text
    out = tmp_path / "annotations.jsonl"
    assert run_cli("annotations", workspace.root, "--out", out).returncode == 0
    assert [json.loads(line)["pair_id"] for line in out.read_text().splitlines()] == [ids[2], ids[5],
                                                                                    "ffffffffffffffff"]
    missing = run_cli("annotations", tmp_path / "nowhere")
    assert missing.returncode == 1 and "not a dmtui workspace" in missing.stderr


def test_annotations_are_listed_without_the_dataset_and_a_listing_writes_nothing(tmp_path, data):
    """Review 1 item 14: a moved or changed dataset leaves the rows unknown but lists every
    annotation; --accept-changes finds the rows in the new version without recording it."""
    workspace = Workspace.open_or_create(str(data))
    ids = workspace.load().pairs["pair_id"].to_pylist()
    with AnnotationStore(workspace.annotations_path) as store:
        store.update(ids[3], flags=("toxic",), note="rude")
        store.update(ids[1], swapped=True)
    recorded = (workspace.root / "workspace.json").read_bytes()

    data.write_text("\n".join(data.read_text().splitlines()[1:]) + "\n")  # row 0 deleted: rows move up
    changed = run_cli("annotations", workspace.root, "--json")
    assert changed.returncode == 0, changed.stderr
    assert "changed since this workspace last loaded it" in changed.stderr and "--accept-changes" in changed.stderr
    listed = json.loads(changed.stdout)
    assert [(r["pair_id"], r["row"], r["in_data"]) for r in listed["annotations"]] == sorted(
        [(ids[3], None, None), (ids[1], None, None)])
    assert listed["counts"]["toxic"] == 1 and listed["counts"]["not_in_data"] == 0 and listed["rows_unknown"]
    accepted = json.loads(run_cli("annotations", workspace.root, "--json", "--accept-changes").stdout)
    assert [(r["pair_id"], r["row"]) for r in accepted["annotations"]] == [(ids[1], 0), (ids[3], 2)]
    assert accepted["rows_unknown"] is None
    assert (workspace.root / "workspace.json").read_bytes() == recorded
    assert Workspace.read(workspace.root).dataset == workspace.dataset

    data.rename(tmp_path / "moved.jsonl")
    missing = run_cli("annotations", workspace.root)
    assert missing.returncode == 0, missing.stderr
    assert "is missing" in missing.stderr and "rude" in missing.stdout and "unknown" in missing.stdout
    assert (workspace.root / "workspace.json").read_bytes() == recorded
