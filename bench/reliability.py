"""Runs the fault-injection suite (tests/test_faults.py) and writes RELIABILITY.md: what was tried, and how it came out.

    .venv/bin/python bench/reliability.py            # writes RELIABILITY.md at the repository root
    .venv/bin/python bench/reliability.py --out X.md

The cases come from the suite itself (its corpus, bad invocations, kill points and corruptions),
the outcomes from pytest's JUnit XML, so the table cannot drift from what CI runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {
    "corpus": "hostile files in a dataset",
    "data": "silent data decisions",
    "corrupt": "corrupted caches and run folders",
    "kill": "train killed at checkpoint boundaries, then --resume; prepare killed at random times, then re-run",
    "disk": "full disks (simulated ENOSPC, and a real 2 MB tmpfs where mounting is permitted)",
    "cli": "bad command-line invocations",
}


def run_suite(junit: Path) -> tuple[dict[str, str], float]:
    """{test id: passed|failed|skipped (reason)} and the wall time of the run."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_faults.py", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=ROOT, check=False,
    )
    seconds = time.perf_counter() - started
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        if case.find("failure") is not None or case.find("error") is not None:
            outcomes[name] = "failed"
        elif (skip := case.find("skipped")) is not None:
            outcomes[name] = f"skipped ({(skip.get('message') or '').removeprefix('Skipped: ')})"
        else:
            outcomes[name] = "passed"
    return outcomes, seconds


def section_of(test_name: str) -> str:
    return test_name.removeprefix("test_").split("_", 1)[0]


def render(outcomes: dict[str, str], seconds: float) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    import test_faults as suite

    lines = [
        "# Reliability",
        "",
        "What the fault-injection suite (`tests/test_faults.py`, run in CI) tries, and how it came out.",
        f"Regenerate with `.venv/bin/python bench/reliability.py` ({len(outcomes)} cases, {seconds:.0f} s here).",
        "",
        "| section | what is tried | cases | passed | failed | skipped |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    by_section: dict[str, Counter[str]] = {}
    for name, outcome in outcomes.items():
        by_section.setdefault(section_of(name), Counter())[outcome.split(" ")[0]] += 1
    for section, what in SECTIONS.items():
        c = by_section.get(section, Counter())
        lines.append(f"| {section} | {what} | {sum(c.values())} | {c['passed']} | {c['failed']} | {c['skipped']} |")

    from _pytest.compat import ascii_escaped  # how pytest spells non-ASCII parameter ids

    def outcome(test: str, param: str) -> str:
        return outcomes.get(f"{test}[{param}]") or outcomes.get(f"{test}[{ascii_escaped(param)}]", "not run")

    expected = Counter(c.expect for c in suite.CORPUS)
    lines += [
        "",
        "## Hostile corpus",
        "",
        f"{len(suite.CORPUS)} files written by the test: " + ", ".join(f"{n} expected {k}" for k, n in sorted(expected.items())) + ".",
        "'kept' files are in the cache; 'note' ones too, with a warning counted in the summary; 'unreadable' ones are",
        "skipped with their error listed; 'left out' ones are not images and are counted by reason.",
        "",
        "| file | expected | detail | result |",
        "| --- | --- | --- | --- |",
    ]
    for c in suite.CORPUS:
        lines.append(f"| `{c.path}` | {c.expect} | {c.detail} | {outcome('test_corpus_file_has_its_expected_outcome', c.path)} |")
    lines += ["", "## Corrupted caches", "", "| damage | named in the error | caught on open | result |", "| --- | --- | --- | --- |"]
    for name, (_, word, on_open) in suite.CORRUPTIONS.items():
        lines.append(f"| {name} | {word} | {'yes' if on_open else 'by data verify'} | "
                     f"{outcome('test_corrupt_cache_is_reported_by_name_and_rebuilt_by_prepare', name)} |")
    lines += ["", "## Kills (`os._exit(137)` at a named point, then `--resume`)", "",
              "| killed at | result: metrics.csv and TensorBoard equal an uninterrupted run's |", "| --- | --- |"]
    for point in suite.KILL_POINTS:
        lines.append(f"| `{point}` | {outcome('test_kill_then_resume_matches_an_uninterrupted_run', point)} |")
    lines += ["", "## Bad invocations (exit 2, one `error:` line naming the option or file, no traceback)", "",
              "| invocation | the error names | result |", "| --- | --- | --- |"]
    for name, _, needle in suite.BAD:
        lines.append(f"| {name} | `{needle}` | {outcome('test_cli_bad_invocation_is_one_error_line', name)} |")
    others = sorted(n for n in outcomes if "[" not in n)
    lines += ["", "## Single checks", "", "| test | result |", "| --- | --- |"]
    lines += [f"| `{n}` | {outcomes[n]} |" for n in others]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "RELIABILITY.md", help="markdown file to write (default: RELIABILITY.md)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outcomes, seconds = run_suite(Path(tmp) / "junit.xml")
    args.out.write_text(render(outcomes, seconds))
    failed = sum(1 for o in outcomes.values() if o == "failed")
    print(f"wrote {args.out}: {len(outcomes)} cases, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
