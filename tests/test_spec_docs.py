"""The contract in the repository (docs/spec.md), the command line and the README.

- docs/spec.md has sections 1-12 numbered as the upstream contract, and every
  "docs/spec.md section N" citation in the code and README names a section that
  exists;
- the facts docs/spec.md states (known answers, worked example, constants) are
  what the code computes;
- nothing points outside the repository (``../shared``);
- ``python -m fastdropout --version`` and ``info --help``;
- ``dir(fastdropout.reference)`` is its public API;
- the README's spatial dropout examples (backward included) run.
"""

from __future__ import annotations

import inspect
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _util import HAVE_CORE, NO_CORE_REASON, fastdropout, reference

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "spec.md"
README = ROOT / "README.md"
PACKAGE = ROOT / "python" / "fastdropout"

needs_core = pytest.mark.skipif(not HAVE_CORE, reason=NO_CORE_REASON)


def _spec_text() -> str:
    return SPEC.read_text(encoding="utf-8")


def _section_numbers(text: str) -> list[str]:
    """Numbers of the headings ``## N. Title`` and ``### N.M Title``."""
    return re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", text, flags=re.MULTILINE)


# A citation: "docs/spec.md section 7", "docs/spec.md, section 6.2",
# "docs/spec.md sections 3 and 4", possibly broken over a comment line.
_SEP = r"[\s#*/]+"
_NUM = r"\d+(?:\.\d+)*"
_CITE = re.compile(
    rf"(?:docs/)?spec\.md,?{_SEP}(?:sections?|§){_SEP}?({_NUM}(?:{_SEP}?(?:,|and|to|-|\u2013){_SEP}?{_NUM})*)"
)


def _citations(text: str) -> list[str]:
    found = []
    for match in _CITE.finditer(text):
        found += re.findall(_NUM, match.group(1))
    return found


# -- docs/spec.md ------------------------------------------------------------------


def test_spec_sections_keep_the_upstream_numbers() -> None:
    text = _spec_text()
    top = re.findall(r"^## (\d+)\. \S", text, flags=re.MULTILINE)
    assert top == [str(n) for n in range(1, len(top) + 1)]
    assert len(top) >= 13  # 1-12 as upstream, 13: this document
    titles = dict(re.findall(r"^## (\d+)\. (.+)$", text, flags=re.MULTILINE))
    for number, word in [
        ("2", "stream"),
        ("3", "Values"),
        ("4", "Mask shapes"),
        ("5", "mask"),
        ("6", "Python API"),
        ("7", "Errors"),
        ("8", "bfloat16"),
        ("9", "residual add"),
        ("10", "Alpha dropout"),
        ("11", "Windows"),
        ("12", "Framework"),
    ]:
        assert word in titles[number], (number, titles[number])
    # subsections are numbered inside their section
    for sub in _section_numbers(text):
        if "." in sub:
            assert sub.split(".")[0] in top, sub


def test_spec_contents_links_resolve() -> None:
    """The table of contents' anchors are GitHub's slugs of the headings."""
    text = _spec_text()
    slugs = set()
    for heading in re.findall(r"^#{2,4} (.+)$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    anchors = re.findall(r"\]\(#([^)]+)\)", text)
    assert anchors
    assert set(anchors) <= slugs, set(anchors) - slugs


def _cited_files() -> list[Path]:
    files = [
        p for ext in ("*.py", "*.pyi", "*.html") for p in sorted(PACKAGE.rglob(ext))
    ]
    files += [README, SPEC]
    for folder in ("cpp", "tests", "tools", "bench"):
        for ext in ("*.py", "*.hpp", "*.cpp", "*.sh"):
            files += sorted((ROOT / folder).rglob(ext))
    return files


def test_every_citation_names_an_existing_section() -> None:
    sections = set(_section_numbers(_spec_text()))
    bad = []
    count = 0
    for path in _cited_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number in _citations(text):
            count += 1
            if number not in sections:
                bad.append(f"{path.relative_to(ROOT)}: section {number}")
    assert count > 0  # the README cites it at least
    assert not bad, f"citations of docs/spec.md sections that do not exist: {bad}"


def test_citation_pattern() -> None:
    text = (
        "see docs/spec.md section 7; docs/spec.md, section 6.2 and\n"
        "# docs/spec.md\n# section 11, docs/spec.md sections 3 and 4"
    )
    assert _citations(text) == ["7", "6.2", "11", "3", "4"]


def test_nothing_points_outside_the_repository() -> None:
    for path in [README, SPEC, *sorted(PACKAGE.rglob("*.py"))]:
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text, path
        assert "shared/SPEC" not in text, path
    assert "SPEC.md" not in README.read_text(encoding="utf-8")
    assert "(docs/spec.md)" in README.read_text(encoding="utf-8")


def test_spec_known_answers_are_philox() -> None:
    """The KAT block of section 2.1 is what reference.philox computes."""
    text = _spec_text()
    rows = re.findall(r"^((?:[0-9a-f]{8} +){9}[0-9a-f]{8})$", text, flags=re.MULTILINE)
    assert len(rows) == 3
    kat_file = (ROOT / "tests" / "data" / "philox_kat.txt").read_text()
    for row in rows:
        words = [int(w, 16) for w in row.split()]
        out = reference.philox(words[0:4], words[4:6])
        assert [int(w) for w in out] == words[6:10]
        assert " ".join(row.split()[:6]) in " ".join(kat_file.split())


def test_spec_worked_example() -> None:
    text = _spec_text()
    words_row = re.search(r"^\| word `r` \|(.+)$", text, flags=re.MULTILINE)
    kept_row = re.search(r"^\| kept \|(.+)$", text, flags=re.MULTILINE)
    assert words_row
    assert kept_row
    words = [int(w.strip(" `"), 16) for w in words_row.group(1).split("|")[:-1]]
    kept = [k.strip() == "yes" for k in kept_row.group(1).split("|")[:-1]]
    assert len(words) == len(kept) == 8
    blocks = reference.philox(([0, 1], 0, 0, 0), (42, 0)).reshape(-1)
    assert [int(w) for w in blocks] == words
    assert [w >= 2**31 for w in words] == kept
    bits = reference.mask_bits(42, 0, 8, 0.5)
    assert list(np.unpackbits(bits, bitorder="little").astype(bool)) == kept
    assert int(bits[0]) == 81
    assert "`0b01010001` (`81`)" in text
    expected = np.where(kept, 2.0, 0.0).astype(np.float32)
    y = reference.dropout(np.ones(8, np.float32), 0.5, seed=42)
    np.testing.assert_array_equal(y, expected)
    if HAVE_CORE:
        np.testing.assert_array_equal(
            fastdropout.dropout(np.ones(8, np.float32), 0.5, seed=42), expected
        )


def test_spec_threshold_edges() -> None:
    """Section 2.3: p <= 2**-33 drops nothing, p >= 1 - 2**-33 drops everything."""
    from fastdropout import _validate

    assert _validate.threshold(2.0**-33) == 0
    assert _validate.threshold(math.nextafter(2.0**-33, 1.0)) == 1
    assert _validate.threshold(1 - 2.0**-33) == 2**32
    assert _validate.threshold(math.nextafter(1 - 2.0**-33, 0.0)) == 2**32 - 1


def test_spec_float16_largest_p() -> None:
    """Section 8's table: the largest p whose float16 scale is finite."""
    text = _spec_text()
    row = re.search(
        r"^\| float16 \| `1 / \(1 - p\) >= 65520` \| `([0-9.]+)` \|",
        text,
        flags=re.MULTILINE,
    )
    assert row
    p_max = float(row.group(1))
    with np.errstate(over="ignore"):
        assert np.isfinite(np.float16(1.0 / (1.0 - p_max)))
        assert np.isinf(np.float16(1.0 / (1.0 - math.nextafter(p_max, 1.0))))
    # bfloat16: the largest finite float64 scale is 2**53, far below its max
    assert 1.0 / (1.0 - math.nextafter(1.0, 0.0)) == 2.0**53


def test_spec_alpha_constants() -> None:
    text = _spec_text()
    assert "alpha' = -1.7580993408473766" in text
    selu_scale = 1.0507009873554804934193349852946
    selu_alpha = 1.6732632423543772848170429916717
    alpha_ = -1.7580993408473766
    assert -selu_scale * selu_alpha == alpha_
    for p, a_doc, b_doc, d_doc in re.findall(
        r"`p = ([0-9.]+)` gives `a = ([-0-9.]+)`, `b = ([-0-9.]+)`,\s+`d = ([-0-9.]+)`",
        text,
    ):
        pf = float(p)
        a = ((1 - pf) * (1 + pf * alpha_**2)) ** -0.5
        b = -a * alpha_ * pf
        d = a * alpha_ + b
        assert (repr(a), repr(b), repr(d)) == (a_doc, b_doc, d_doc)


@needs_core
def test_spec_lists_every_public_name() -> None:
    """Every public name of the package appears in docs/spec.md."""
    text = _spec_text()
    for name in fastdropout.__all__:
        if name != "__version__":
            assert f"{name}" in text, name
    assert "fastdropout.__version__" in text


# -- command line --------------------------------------------------------------


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastdropout", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_core
def test_cli_version() -> None:
    proc = _run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == fastdropout.__version__ + "\n"
    assert proc.stderr == ""


@needs_core
def test_cli_info_help() -> None:
    proc = _run_cli("info", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m fastdropout info")
    assert "simd level" not in proc.stdout  # help, not the report
    assert proc.stderr == ""


@needs_core
def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from fastdropout.__main__ import main

    assert main(["info", "--no-such-flag"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    assert main(["--version", "extra"]) == 2
    assert "--version takes no arguments" in capsys.readouterr().err
    assert main(["-V"]) == 0
    assert capsys.readouterr().out == fastdropout.__version__ + "\n"
    assert main(["--help"]) == 0
    assert "--version" in capsys.readouterr().out
    assert main(["info", "-h"]) == 0
    assert "usage: python -m fastdropout info" in capsys.readouterr().out


# -- the reference module --------------------------------------------------------


def test_dir_reference_is_its_public_api() -> None:
    public = sorted(reference.__all__)
    assert dir(reference) == public
    assert all(not name.startswith("_") for name in public)
    assert all(hasattr(reference, name) for name in public)
    # every public function or class defined in reference.py is listed
    defined = {
        name
        for name, obj in vars(reference).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == reference.__name__
    }
    assert defined <= set(public), defined - set(public)


@needs_core
def test_reference_mirrors_the_package_api() -> None:
    """Each dropout function, layer and Mask of the package is in the reference."""
    runtime_only = {"get_num_threads", "set_num_threads", "simd_level"}
    for name in fastdropout.__all__:
        obj = getattr(fastdropout, name)
        if name in runtime_only or not (
            inspect.isfunction(obj) or inspect.isclass(obj)
        ):
            continue
        assert name in reference.__all__, name


# -- README examples ---------------------------------------------------------------


def _readme_blocks(heading: str) -> list[str]:
    """The ```python blocks of the README section under ``heading`` (up to the
    next heading of the same or a higher level outside code blocks)."""
    level = len(heading.split(" ", 1)[0])
    blocks: list[str] = []
    inside = False
    fence: str | None = None  # the language of the open code block
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if fence is None:
                fence = line[3:].strip()
                if inside and fence == "python":
                    blocks.append("")
            else:
                fence = None
        elif fence is None:
            hashes = len(line) - len(line.lstrip("#"))
            if line == heading:
                inside = True
            elif inside and 0 < hashes <= level and line[hashes:].startswith(" "):
                break
        elif inside and fence == "python":
            blocks[-1] += line + "\n"
    return blocks


@needs_core
def test_readme_spatial_examples_run() -> None:
    blocks = _readme_blocks("### Spatial dropout for convolutional layers")
    assert len(blocks) >= 2
    backward = [b for b in blocks if "dropout_backward" in b]
    assert backward
    for word in ("channels_last", "seed=7", "return_mask", "p=0.2"):
        assert word in backward[0], word
    namespace: dict[str, object] = {"np": np, "fd": fastdropout}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    # the example's claim, checked here as well
    grad_x = namespace["grad_x"]
    mask = namespace["m"]
    assert isinstance(grad_x, np.ndarray)
    assert isinstance(mask, fastdropout.Mask)
    kept = mask.to_bool()  # (N, 1, 1, C)
    expected = np.where(kept, np.float32(1 / (1 - 0.2)), np.float32(0))
    np.testing.assert_array_equal(grad_x, np.broadcast_to(expected, grad_x.shape))
