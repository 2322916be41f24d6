"""A command's executors end with the command, however it ends: a command run in process
(tests, a notebook) leaves no local Ray and no reaper behind, whose reaper could later end
processes of a Ray started after it."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

import curate.cli as cli
from curate.cli import app


class _Executor:
    def __init__(self, log: list) -> None:
        self.log = log

    def shutdown(self) -> None:
        self.log.append("shutdown")


@pytest.fixture
def fake(monkeypatch):
    log: list = []
    monkeypatch.setattr("curate.execution.make.make_executor", lambda *a, **k: _Executor(log))
    monkeypatch.setattr(cli, "_doctor_first", lambda *a, **k: None)
    return log


@pytest.mark.parametrize("outcome,code", [("ok", 0), ("bad input", 2)])
def test_a_build_shuts_its_executor_down_when_it_ends(tmp_path, monkeypatch, fake, outcome, code):
    def run_build(recipe, out, ex, options, **kw):
        fake.append("ran")
        if outcome != "ok":
            raise ValueError("a bad sources file")
    monkeypatch.setattr(cli, "_run_build", run_build)
    res = CliRunner().invoke(app, ["build", "demo", "--out", str(tmp_path / "o")])
    assert res.exit_code == code, res.output
    assert fake == ["ran", "shutdown"]
    assert cli._EXECUTORS == []
