"""``byzkern repro <paper> --smoke`` for every paper: the whole pipeline (data, runs, history
files, figure, claims) in seconds. The numbers of a smoke run mean nothing; full runs are out
of the test suite."""
import json
import os

import pytest

from byzkern import cli

FIGURES = {"000": "figure1.png", "001": "figures1_3.png", "002": "figure1.png", "003": "figures4_6.png",
           "004": "table2_curves.png"}


@pytest.mark.parametrize("paper", sorted(FIGURES))
def test_repro_smoke(paper, tmp_path, capsys):
    if paper == "004":
        pytest.importorskip("torch")  # the CNN; byzkern[torch]
    assert cli.main(["repro", paper, "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["paper"] == paper and report["size"] == "smoke"
    assert report["claims"] and all(c["result"] in ("PASS", "FAIL") for c in report["claims"])
    assert all(c["criterion"] and c["measured"] for c in report["claims"])
    assert (tmp_path / FIGURES[paper]).read_bytes()[:4] == b"\x89PNG"
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert runs and len(runs) == len(list((tmp_path / "runs").glob("*.csv")))
    saved = json.loads(runs[0].read_text())
    rows = saved["rows"]
    assert rows[0]["step"] == 0 and rows[-1]["bytes_per_worker"] > 0
    if paper == "000":  # the optimality gap's f* is saved with every run, to redraw the figure from
        assert saved["meta"]["f_star"] > 0
    out = capsys.readouterr().out
    assert all(f"[{c['result']}] {c['claim']}" in out for c in report["claims"])


def test_repro_steps_override(tmp_path):
    assert cli.main(["repro", "001", "--smoke", "--steps", "3", "--no-progress", "--out", str(tmp_path)]) == 0
    rows = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())["rows"]
    assert rows[-1]["step"] == 3


@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
def test_repro_refuses_an_output_folder_it_cannot_write_before_the_run(where, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = {"a file": blocker, "under a file": blocker / "out", "read-only": tmp_path / "ro"}[where]
    if where == "read-only":
        out.mkdir()
        out.chmod(0o500)
        if os.access(out, os.W_OK):
            pytest.skip("the superuser writes anywhere")
    with pytest.raises(SystemExit, match="can't write to the folder"):
        cli.main(["repro", "001", "--smoke", "--no-progress", "--out", str(out)])
    assert not (tmp_path / "ro" / "report.json").exists()
