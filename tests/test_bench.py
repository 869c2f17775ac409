"""The benchmark tool (``python -m fastdropout bench``): a smoke run on tiny
arrays, the structure of its report and JSON, and its refusal to time a wrong
result. No timing is asserted: these machines are shared and noisy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _util import HAVE_CORE, NO_CORE_REASON, fastdropout

pytestmark = pytest.mark.skipif(not HAVE_CORE, reason=NO_CORE_REASON)

ROOT = Path(__file__).resolve().parents[1]
# Tiny, fast settings shared by the tests: one round, no looping within a sample.
FAST = ["--repeats", "1", "--min-time", "0", "--budget", "0", "--memory-n", "4096"]


@pytest.fixture
def bench() -> Any:
    from fastdropout import _bench
    from fastdropout._bench import constants, data, report, settings  # noqa: F401

    return _bench


def run_bench(
    bench: Any, tmp_path: Path, *args: str
) -> tuple[int, dict[str, Any], str]:
    md, js = tmp_path / "bench.md", tmp_path / "bench.json"
    rc = bench.main([*FAST, *args, "--md", str(md), "--json", str(js)])
    return rc, json.loads(js.read_text()), md.read_text()


def rows(data: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [r for r in data["results"] if all(r[k] == v for k, v in match.items())]


def test_smoke_run_structure(
    bench: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    core = fastdropout._core
    simd_before, threads_before = core.simd_level(), core.get_num_threads()
    rc, data, md = run_bench(
        bench, tmp_path, "--sizes", "2**10,2**12", "--threads", "1,max", "--no-torch"
    )
    assert rc == 0
    assert capsys.readouterr().out == md  # stdout is the Markdown report
    # the settings it changed are restored
    assert core.simd_level() == simd_before
    assert core.get_num_threads() == threads_before

    machine = data["machine"]
    for key in (
        "cpu",
        "logical_cpus",
        "simd_available",
        "numpy",
        "torch",
        "date",
        "command",
        "fastdropout",
    ):
        assert key in machine
    assert machine["torch"] is None
    assert data["settings"]["sizes"] == [1 << 10, 1 << 12]
    threads = data["settings"]["threads"]
    assert threads[0] == 1

    for n in (1 << 10, 1 << 12):
        for t in threads:
            for op in bench.OPS:
                (api,) = rows(data, op=op, impl="api", n=n, threads=t)
                assert api["status"] == "ok", api["detail"]
                assert api["checked"] == "full"
                assert api["median_s"] > 0
                assert api["ns_per_elem"] > 0
                assert api["min_s"] <= api["median_s"]
                assert len(api["samples_s"]) == 1
                assert api["simd"] == simd_before
            for impl in ("stream_copy", "copyto"):
                assert (
                    rows(data, op="copy", impl=impl, n=n, threads=t)[0]["status"]
                    == "ok"
                )
            for op in ("forward", "forward_mask", "backward_mask"):
                assert rows(data, op=op, impl="api_alloc", n=n, threads=t)
                assert rows(data, op=op, impl="core", n=n, threads=t)
        assert rows(data, op="forward", impl="numpy", n=n)[0]["status"] == "ok"
    assert not rows(data, impl="torch")

    # the bounds: a native copy and, for the ops that draw a mask, the mask alone
    for n in (1 << 10, 1 << 12):
        for t in threads:
            (gen,) = rows(data, op="gen_bits", impl="gen_bits", n=n, threads=t)
            assert gen["status"] == "ok"
            assert gen["simd"] == simd_before
    assert "| x bound | bound |" in md
    idx = bench.report.Index(data["results"])
    for op in bench.OPS:
        r = idx.get(op, "api", "float32", 1 << 12, 1, simd_before)
        value, name = idx.bound(r, op, "float32", 1 << 12, 1, simd_before)
        assert value is not None
        assert value > 0
        generating = op in ("forward", "forward_mask", "backward_regen", "alpha_dropout",
                            "dropout_add")
        stream = "stream2" if op == "dropout_add" else "copy"
        assert name in ((stream, "gen_bits") if generating else (stream,))
    # dropout_add: the read-two-write-one stream and the unfused sequence are timed
    assert rows(data, op="stream2", impl="stream2", n=1 << 12, threads=1)[0]["status"] == "ok"
    (unfused,) = rows(data, op="dropout_add", impl="unfused", n=1 << 12, threads=1)
    assert unfused["status"] == "ok"
    assert unfused["checked"] == "full"

    verdicts = {t["verdict"] for t in data["targets"]}
    assert verdicts <= {"PASS", "MISS", "n/a"}
    torch_targets = [t for t in data["targets"] if "torch" in t["name"]]
    assert torch_targets
    assert all(t["verdict"] == "n/a" for t in torch_targets)
    assert any(t["name"].endswith("small array") for t in data["targets"])

    mem = data["memory"]
    assert mem["n"] == 4096
    for name in ("forward", "forward_out", "backward_mask"):
        assert mem[name]["peak"] >= mem[name]["expected"] > 0

    for heading in (
        "### fastdropout",
        "### Baselines",
        "### Targets",
        "### Memory",
        "| op | dtype | n | threads | simd | ns/elem",
    ):
        assert heading in md
    assert "PyTorch left out" in md


def test_sampled_check(bench: Any, tmp_path: Path) -> None:
    """Above --check-full-max, results are checked in windows (and still pass)."""
    rc, data, md = run_bench(
        bench,
        tmp_path,
        "--sizes",
        "2**14",
        "--threads",
        "1",
        "--no-torch",
        "--check-full-max",
        "1024",
        "--ops",
        "forward_mask,backward_mask,backward_regen,spatial_cl_forward,spatial_cf_backward",
    )
    assert rc == 0
    checked = {r["op"]: r["checked"] for r in rows(data, impl="api")}
    assert set(checked) == {
        "forward_mask",
        "backward_mask",
        "backward_regen",
        "spatial_cl_forward",
        "spatial_cf_backward",
    }
    assert all(c.startswith("sampled") for c in checked.values()), checked
    assert "sampled" in md


@pytest.mark.parametrize("size", ["2**10", "2**14"], ids=["full", "sampled"])
def test_wrong_result_is_not_timed(
    bench: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = fastdropout.dropout

    def off_by_one_element(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        y = result[0] if isinstance(result, tuple) else result
        flat = y.reshape(-1)
        flat[flat.size // 2] = 7.0  # inside the middle check window
        return result

    monkeypatch.setattr(fastdropout, "dropout", off_by_one_element)
    rc, data, md = run_bench(
        bench,
        tmp_path,
        "--sizes",
        size,
        "--threads",
        "1",
        "--no-torch",
        "--check-full-max",
        "1024",
        "--ops",
        "forward,forward_mask",
    )
    assert rc == 1
    for op in ("forward", "forward_mask"):
        for impl in ("api", "api_alloc"):
            (r,) = rows(data, op=op, impl=impl)
            assert r["status"] == "WRONG"
            assert "reference" in r["detail"]
            assert r["median_s"] is None
            assert r["samples_s"] == []
        (core_row,) = rows(data, op=op, impl="core")  # the raw core is still right
        assert core_row["status"] == "ok"
        assert core_row["median_s"] > 0
    assert "WRONG" in md
    assert "WRONG" in capsys.readouterr().err


def test_bad_arguments(bench: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--sizes" in help_text
    assert "_core" not in help_text  # no private names in the help
    for args in (["--dtypes", "int8"], ["--simd", "nope"], ["--sizes", "0"],
                 ["--ops", "sideways"], ["--quick", "--full"], ["--repeats", "0"],
                 ["--sizes", "2**40"], ["--sizes", "2**100"], ["--sizes", "10**10**10"],
                 ["--sizes", "1<<70"], ["--own-work", "--p", "0"]):
        assert bench.main(args) == 2, args
        err = capsys.readouterr().err
        assert err
        assert "Traceback" not in err
    assert bench.main(["--sizes", "2**40", "--dtypes", "float64"]) == 2
    assert "GiB" in capsys.readouterr().err  # says how much it would need


def test_parse_size(bench: Any) -> None:
    assert [bench.settings.parse_size(s) for s in ("1024", "2**10", "2^10", "1<<10")] == [1024] * 4


def test_spatial_shapes(bench: Any) -> None:
    for k in range(5, 27):
        n, c, h, w = bench.data.spatial_shape(1 << k)
        assert n * c * h * w == 1 << k
    assert bench.data.spatial_shape(1000) is None


def test_plot(bench: Any, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    rc = bench.main(
        [
            *FAST,
            "--sizes",
            "2**10,2**11",
            "--threads",
            "1",
            "--no-torch",
            "--ops",
            "forward_mask,spatial_cf_forward",
            "--memory-n",
            "0",
            "--plot",
            str(png),
        ]
    )
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_torch_baselines(tmp_path: Path) -> None:
    """With PyTorch installed, its baselines are timed, with our thread count.
    In a subprocess: PyTorch brings its own OpenMP runtime, which should not
    stay loaded in the test process."""
    pytest.importorskip("torch")
    js = tmp_path / "bench.json"
    args = [
        *FAST,
        "--sizes",
        "2**10",
        "--threads",
        "1",
        "--ops",
        "forward,forward_mask,backward_mask,spatial",
        "--json",
        str(js),
    ]
    code = (
        "import sys, torch; from fastdropout._bench import main; "
        "before = torch.get_num_threads(); "
        f"rc = main({args!r}); "
        "assert torch.get_num_threads() == before; sys.exit(rc)"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, timeout=300
    )
    data = json.loads(js.read_text())
    got = {r["op"]: r["status"] for r in rows(data, impl="torch")}
    assert got == dict.fromkeys(
        [
            "forward",
            "forward_mask",
            "backward_mask",
            "spatial_cf_forward",
            "spatial_cf_backward",
            "spatial_cl_forward",
            "spatial_cl_backward",
        ],
        "ok",
    )
    assert data["machine"]["torch"]
    assert any(
        t["name"].endswith("torch.native_dropout") and t["verdict"] != "n/a"
        for t in data["targets"]
    )


def test_without_torch(
    bench: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """PyTorch missing: a clear note saying how to get it, and no torch rows."""
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    rc, data, md = run_bench(
        bench, tmp_path, "--sizes", "2**10", "--threads", "1", "--ops", "forward_mask"
    )
    assert rc == 0
    assert not rows(data, impl="torch")
    assert "pip install torch==2.13.0 to include PyTorch" in md
    assert "pip install torch==2.13.0 to include PyTorch" in capsys.readouterr().err


def test_script_wrapper() -> None:
    """bench/bench_dropout.py forwards to fastdropout._bench.main."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_dropout.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "python -m fastdropout bench" in out.stdout


def test_numpy_reference_used_for_checks(bench: Any) -> None:
    """The windows of a sampled check are the reference at the window's offset:
    pieced together, they equal the reference of the whole array."""
    settings = bench.settings.make_settings(bench.settings.build_parser().parse_args(
        ["--sizes", "2**14", "--check-full-max", "1024", "--dtypes", "float32"]),
        fastdropout._core)
    d = bench.data.Data(fastdropout, "float32", 1 << 14, settings)
    whole, mask = fastdropout.reference.dropout(d.x, d.p, seed=d.seed, return_mask=True)
    for w in d.expected("forward_mask"):
        np.testing.assert_array_equal(
            w.y.view(np.uint32), whole[w.start : w.stop].view(np.uint32)
        )
        np.testing.assert_array_equal(
            w.bits, mask.bits[w.bits_start : w.bits_start + len(w.bits)]
        )


def test_ratio_pairs_rounds_of_one_group(bench: Any) -> None:
    """Rows of one thread count are compared round by round (the machine's speed
    drifts between rounds, not within one); other rows by their medians."""

    def row(samples: list[float], threads: int | None) -> dict[str, Any]:
        return {
            "samples_s": samples,
            "median_s": float(np.median(samples)),
            "threads": threads,
        }

    # both slowed down 3x in the last two rounds: each round's ratio is exactly 1.2
    a = row([1.2, 1.2, 1.2, 3.6, 3.6], 2)
    b = row([1.0, 1.0, 1.0, 3.0, 3.0], 2)
    assert bench.report.Index.ratio(a, b) == pytest.approx(1.2)
    # a drift that hits the rounds of a and b differently shows up in the median
    c = row([1.0, 1.0, 3.0, 3.0, 3.0], 2)
    assert bench.report.Index.ratio(a, c) == pytest.approx(1.2)
    # fewer rounds for the slow baseline: the common rounds are paired
    assert bench.report.Index.ratio(a, row([1.0, 1.0, 1.0], 2)) == pytest.approx(1.2)
    # different groups (the NumPy idiom has no thread count): ratio of medians
    assert bench.report.Index.ratio(a, row([1.0, 2.0, 3.0], None)) == pytest.approx(1.2 / 2.0)
    assert bench.report.Index.ratio(None, b) is None
    assert bench.report.Index.ratio(a, {"samples_s": [], "median_s": None, "threads": 2}) is None


def test_bfloat16_and_fused_ops(bench: Any, tmp_path: Path) -> None:
    """bfloat16 (with ml_dtypes) and the fused ops, checked against the reference
    in windows above --check-full-max."""
    pytest.importorskip("ml_dtypes")
    rc, data, _ = run_bench(bench, tmp_path, "--sizes", "2**14", "--threads", "1",
                            "--no-torch", "--dtypes", "bfloat16,float16",
                            "--ops", "fused,forward_mask", "--check-full-max", "1024")
    assert rc == 0
    for dtype in ("bfloat16", "float16"):
        for op in ("alpha_dropout", "dropout_add", "dropout_add_backward", "forward_mask"):
            (r,) = rows(data, op=op, impl="api", dtype=dtype)
            assert r["status"] == "ok", r["detail"]
            assert r["checked"].startswith("sampled")


def test_targets_every_op_against_its_bound(bench: Any, tmp_path: Path) -> None:
    """Every op run gets a 'vs its bound' target (README Performance), and
    dropout_add_backward's grad_bias is checked whole at a small size."""
    rc, data, _ = run_bench(bench, tmp_path, "--sizes", "2**10", "--threads", "1",
                            "--no-torch", "--ops", "fused,forward", "--repeats", "3")
    assert rc == 0
    (r,) = rows(data, op="dropout_add_backward", impl="api", dtype="float32")
    assert r["status"] == "ok", r["detail"]
    assert r["checked"] == "full"
    names = {t["name"] for t in data["targets"]}
    for op in ("forward", "alpha_dropout", "dropout_add", "dropout_add_backward"):
        assert any(name.startswith(f"{op} vs its bound") for name in names), op
        assert f"{op} (without out=) vs NumPy idiom, small array" in names
    assert "alpha_dropout vs dense forward" in names
    assert "dropout_add vs the unfused sequence" in names


def test_own_work(bench: Any, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--own-work: each op that draws a mask is timed again at p = 0 (checked against
    the reference at p = 0, so a p = 0.5 result there is WRONG) and the report has
    the table of where the time goes; without the flag there is neither."""
    ops = "forward,alpha_dropout,dropout_add,backward_mask"
    common = ["--sizes", "2**12", "--threads", "1", "--no-torch", "--ops", ops]
    rc, data, md = run_bench(bench, tmp_path, *common, "--own-work")
    assert rc == 0
    assert data["settings"]["own_work"] is True
    for op in ("forward", "alpha_dropout", "dropout_add"):
        (r,) = rows(data, op=op, impl="api_p0")
        assert r["status"] == "ok", r["detail"]
        assert r["checked"] == "full"
        assert r["median_s"] > 0
        assert r["label"].endswith("at p = 0")
    assert not rows(data, op="backward_mask", impl="api_p0")  # draws no mask
    section = md.split("### Where the time goes")[1].split("### Targets")[0]
    for op in ("forward", "alpha_dropout", "dropout_add"):
        assert section.count(f"| {op} | float32 | 2**12 | 1 |") == 1, op
    assert "| backward_mask |" not in section

    # the p = 0 results are checked against the reference at p = 0, not at --p
    real = fastdropout.alpha_dropout

    def always_half(x: Any, _p: float, **kwargs: Any) -> Any:
        return real(x, 0.5, **kwargs)

    monkeypatch.setattr(fastdropout, "alpha_dropout", always_half)
    rc, data, _ = run_bench(bench, tmp_path, *common, "--own-work")
    assert rc == 1
    (r,) = rows(data, op="alpha_dropout", impl="api_p0")
    assert r["status"] == "WRONG"
    (r,) = rows(data, op="alpha_dropout", impl="api")
    assert r["status"] == "ok"
    monkeypatch.undo()

    rc, data, md = run_bench(bench, tmp_path, *common)
    assert rc == 0
    assert data["settings"]["own_work"] is False
    assert not rows(data, impl="api_p0")
    assert "Where the time goes" not in md


def test_data_at_p(bench: Any) -> None:
    """Data.at_p shares the arrays and has its own reference: at p = 0 dropout keeps
    every element unscaled."""
    s = bench.settings.make_settings(
        bench.settings.build_parser().parse_args(["--sizes", "2**10"]), fastdropout._core)
    d = bench.data.Data(fastdropout, "float32", 1024, s)
    d0 = d.at_p(0.0)
    assert d0.x is d.x
    assert d0.y is d.y
    assert (d0.p, d.p) == (0.0, 0.5)
    (w0,) = d0.expected("forward")
    np.testing.assert_array_equal(w0.y.view(np.uint32), d.x.view(np.uint32))
    (w,) = d.expected("forward")
    assert not np.array_equal(w.y, d.x)  # d's own reference is untouched


def test_bfloat16_needs_ml_dtypes(bench: Any, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes -> ImportError
    monkeypatch.delitem(bench.constants.DTYPES, "bfloat16", raising=False)
    assert bench.main(["--dtypes", "bfloat16"]) == 2
    assert "pip install ml_dtypes" in capsys.readouterr().err
