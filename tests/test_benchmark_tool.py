"""tools/benchmark.py prints its table with the official column (sas-yolov7) and the ratios.
Small inputs: this checks the harness, not speed (speed is never asserted in tests)."""
import pytest

from scripts import load_script

pytest.importorskip("sas_yolov7")


def test_forward_rows_with_the_official_column(capsys):
    tool = load_script("tools/benchmark.py")
    assert tool.main(["--rows", "forward", "--repeats", "1", "--threads", "1",
                      "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "CPU flags" in out and "torch 2" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines()
            if line.startswith("| forward") or line.startswith("| same")]
    assert len(rows) == 6
    for work, official, ours, ratio in rows:
        assert official.strip().endswith("ms") and ours.strip().endswith("ms")
        assert float(ratio) > 0


def test_without_the_official_code_only_our_column(capsys):
    tool = load_script("tools/benchmark.py")
    assert tool.main(["--official", "none", "--rows", "loss", "--repeats", "1",
                      "--threads", "1", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "not found (ours only)" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| assign")]
    assert len(rows) == 4 and all(r[1].strip() == "" and r[3].strip() == "" for r in rows)
