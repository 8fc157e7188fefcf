"""audit.report: the human report (Markdown, HTML, figures), loading, the terminal table."""

import copy
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from audit.errors import InputError
from audit.report import load_report, render_report, summary_table

FIXTURE = Path(__file__).parent / "fixtures" / "report_example.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Independent of audit.report.content: a sentence mentioning "private" must be negated.
NEGATION = re.compile(r"\b(not|never|no|cannot)\b|n't\b", re.IGNORECASE)


def privacy_claims(text):
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
    return [s for s in sentences if re.search(r"\bprivate\b", s, re.IGNORECASE) and not NEGATION.search(s)]


def sections(markdown):
    """{heading text: body} for the level-2 sections of a Markdown document."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])  # IHDR follows the signature
    return width, height


@pytest.fixture
def example():
    return load_report(FIXTURE)


@pytest.fixture
def non_dp(example):
    report = copy.deepcopy(example)
    report.update(name="quickstart-plain", mode="non-dp", bounds=[], estimates=[], gate=None,
                  claimed={"epsilon": None, "delta": None, "source": None},
                  verdict={"decision": "REPORTED", "exit_code": 0, "epsilon_lower_bound": None,
                           "claimed_epsilon": None, "power": None, "confidence": 0.95,
                           "message": "Non-DP audit: attack results reported."})
    report["utility"]["test_accuracy"] = None
    return report


# --- render_report ---------------------------------------------------------------------


def test_render_writes_markdown_html_and_both_figures(example, tmp_path):
    paths = render_report(example, tmp_path / "out")
    assert sorted(p.name for p in paths) == ["epsilon.png", "report.html", "report.md", "roc.png"]
    assert all(p.parent == tmp_path / "out" and p.is_file() for p in paths)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]  # atomic writes leave nothing


def test_markdown_opens_with_title_and_verdict_message(example, tmp_path):
    render_report(example, tmp_path)
    md = (tmp_path / "report.md").read_text()
    lines = [line for line in md.splitlines() if line.strip()]
    assert lines[0] == "# Audit report: quickstart-dp"
    assert lines[1].startswith("**Verdict: NO VIOLATION DETECTED.**")
    assert example["verdict"]["message"] in lines[1]


def test_markdown_carries_the_fixture_numbers(example, tmp_path):
    render_report(example, tmp_path)
    md = (tmp_path / "report.md").read_text()
    bounds = sections(md)["Claimed epsilon and guaranteed lower bounds"]
    assert "Claimed epsilon = 2.31 at delta = 1e-05 (source: opacus-prv accountant)." in bounds
    assert "| one-run/lira-online (best) | 0.12 | one-run | 95% | 1e-05 | 4.2 | no |" in bounds
    attacks = sections(md)["Membership-inference attacks"]
    assert ("| attack | AUC | TPR at 10% FPR | TPR at 1% FPR | TPR at 0.1% FPR | TPR at 0.01% FPR |"
            in attacks)
    assert "| lira-online | 0.53 | 13% [11%, 15%] | 2% [1.4%, 2.7%] | 0.3% [0.1%, 0.7%] | 0.05% [0%, 0.3%] \\* |" \
        in attacks
    assert "| loss | 0.51 | 11% [9%, 13%] |" in attacks
    utility = sections(md)["Utility"]
    assert "| train accuracy | 73% |" in utility and "| test accuracy | 72% |" in utility
    timings = sections(md)["Timings"]
    assert "| train | 41.2 s |" in timings and "| total | 44.7 s |" in timings
    assert "How to read this report" in sections(md)


def test_a_pass_states_its_power_and_never_claims_privacy(example, tmp_path):
    render_report(example, tmp_path)
    for name in ("report.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert privacy_claims(text) == []
        assert "could have shown at most 4.2" in text
    assert "no violation detected" in (tmp_path / "report.md").read_text().lower()


def test_a_pass_message_claiming_privacy_is_replaced(example, tmp_path):
    example["verdict"]["message"] = "Audit passed. The model is private."
    render_report(example, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "The model is private." not in md
    assert privacy_claims(md) == []
    assert "No violation detected: the epsilon lower bound 0.12 does not exceed the claimed epsilon 2.31" in md
    assert "This audit could have shown at most 4.2." in md


def test_a_pass_message_without_power_gets_the_power(example, tmp_path):
    example["verdict"]["message"] = "No violation detected."
    render_report(example, tmp_path)
    first = (tmp_path / "report.md").read_text().split("\n\n")[1]
    assert first.endswith("No violation detected. This audit could have shown at most 4.2.")


def test_estimates_have_their_own_labelled_section(example, tmp_path):
    render_report(example, tmp_path)
    parts = sections((tmp_path / "report.md").read_text())
    estimates = parts["Estimates (not guaranteed bounds)"]
    assert "Estimates assume a Gaussian trade-off curve; they never decide the verdict." in estimates
    assert "| gdp/lira-online | 0.4 | gdp | 1e-05 |" in estimates
    assert "gdp/lira-online" not in parts["Claimed epsilon and guaranteed lower bounds"]


def test_html_is_standalone_with_embedded_figures(example, tmp_path):
    render_report(example, tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count('src="data:image/png;base64,') == 2
    assert example["verdict"]["message"] in html
    assert "<td>0.12</td>" in html and "Estimates (not guaranteed bounds)" in html


def test_figures_are_nontrivial_pngs(example, tmp_path):
    render_report(example, tmp_path)
    for name in ("roc.png", "epsilon.png"):
        path = tmp_path / name
        width, height = png_size(path)
        assert width >= 400 and height >= 200
        assert path.stat().st_size > 10_000


def test_non_dp_report_without_bounds_or_test_accuracy(non_dp, tmp_path):
    paths = render_report(non_dp, tmp_path)
    assert sorted(p.name for p in paths) == ["report.html", "report.md", "roc.png"]  # nothing to put on epsilon.png
    md = (tmp_path / "report.md").read_text()
    assert "**Verdict: REPORTED.** Non-DP audit: attack results reported." in md
    assert "No claimed epsilon" in md and "No guaranteed epsilon lower bound was computed" in md
    assert "No estimates in this audit." in md
    assert "| test accuracy | - |" in md
    assert "epsilon.png" not in md


def test_a_bare_report_renders(tmp_path):
    paths = render_report({"schema": "dpaudit.report/1"}, tmp_path)
    assert sorted(p.name for p in paths) == ["report.html", "report.md"]
    md = (tmp_path / "report.md").read_text()
    assert "**Verdict: NO VERDICT.** This report has no verdict." in md
    assert "No attack results in this report." in md


def test_a_violation_and_an_infinite_bound(example, tmp_path):
    example["bounds"][0]["epsilon_lower_bound"] = "inf"  # how EpsilonResult.to_dict writes infinity
    example["verdict"].update(decision="VIOLATION", message=None, epsilon_lower_bound="inf")
    render_report(example, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "**Verdict: VIOLATION.** Violation: the epsilon lower bound inf exceeds the claimed epsilon 2.31" in md
    assert "| one-run/lira-online (best) | inf | one-run | 95% | 1e-05 | 4.2 | yes |" in md
    assert png_size(tmp_path / "epsilon.png")[0] >= 400


@pytest.mark.parametrize("field, value", [("attacks", [1, 2]), ("bounds", {"a": 1}), ("claimed", "2.31")])
def test_a_part_of_the_wrong_type_is_named(example, tmp_path, field, value):
    example[field] = value
    with pytest.raises(InputError, match=field):
        render_report(example, tmp_path)


def test_a_non_number_is_named(example, tmp_path):
    example["attacks"]["loss"]["auc"] = "high"
    with pytest.raises(InputError, match=r"attacks\.loss\.auc.*'high'"):
        render_report(example, tmp_path)


def test_out_dir_that_is_a_file(example, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        render_report(example, tmp_path / "file")


def test_import_is_light():
    code = "import sys, audit.report; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- load_report -----------------------------------------------------------------------


def test_load_from_file_and_from_run_directory(tmp_path):
    (tmp_path / "report.json").write_text(FIXTURE.read_text())
    assert load_report(tmp_path) == load_report(tmp_path / "report.json") == json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("content, match", [
    (None, "no such file"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON list, expected an object"),
    ('{"schema": "dpaudit.report/0"}', "schema 'dpaudit.report/0'"),
    ('{"name": "x"}', "schema None"),
])
def test_load_rejects_bad_input(tmp_path, content, match):
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=match) as info:
        load_report(path)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_load_missing_run_directory(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_report(tmp_path / "missing-run")


# --- summary_table ---------------------------------------------------------------------


def table_rows(text):
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]


def test_summary_table_of_the_fixture(example):
    rows = table_rows(summary_table([example]))
    assert rows[0] == ["run", "claimed eps", "eps lower bound", "TPR@0.1%FPR", "test acc", "verdict"]
    assert set("".join(rows[1])) == {"-"}
    assert rows[2] == ["quickstart-dp", "2.31", "0.12", "0.3%", "72%", "NO VIOLATION DETECTED"]
    assert summary_table(example) == summary_table([example])  # one report alone is accepted


def test_summary_table_non_dp_prints_dashes(example, non_dp):
    rows = table_rows(summary_table([example, non_dp]))
    assert rows[3] == ["quickstart-plain", "-", "-", "0.3%", "-", "REPORTED"]
    # the columns line up: every row's verdict starts at the same offset
    lines = summary_table([example, non_dp]).splitlines()
    assert len({line.index(v) for line, v in zip(lines[2:], ("NO VIOLATION", "REPORTED"))}) == 1


def test_summary_table_of_a_bare_report():
    rows = table_rows(summary_table([{}]))
    assert rows[2] == ["run 1", "-", "-", "-", "-", "-"]
