"""The ``data fetch`` and ``data stats`` subcommands, run through their own argparse parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from lers_ray.cli.data_commands import add_data_parser


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lers-ray")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_stats_prints_counts(data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LERS_CACHE_DIR", str(tmp_path))

    code = _run(["data", "stats", "ml-100k", "--data-dir", str(data_dir), "--json"])

    stats = json.loads(capsys.readouterr().out)
    assert code == 0
    assert stats["users"] == 943
    assert stats["items"] == 1682
    assert stats["interactions"] == 55_375
    assert stats["train"] + stats["valid"] + stats["test"] == 55_375
    assert stats["density"] == pytest.approx(55_375 / (943 * 1682))
    assert len(stats["fingerprint"]) == 16


def test_stats_subsample_table(tmp_path: Path, monkeypatch, capsys, write_lines) -> None:
    monkeypatch.setenv("LERS_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "mine"
    # Each user lacks only its own test item in train, so any 3 users keep all 6 items.
    train_lines = [
        " ".join(map(str, [user, *(i for i in range(6) if i != user)])) for user in range(6)
    ]
    write_lines(folder / "train.txt", train_lines)
    write_lines(folder / "test.txt", [f"{user} {user}" for user in range(6)])

    code = _run(["data", "stats", str(folder), "--subsample-users", "3"])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert "users            3" in lines
    assert "items            6" in lines
    assert "test             3" in lines


def test_stats_missing_file_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LERS_CACHE_DIR", str(tmp_path / "cache"))

    code = _run(["data", "stats", "gowalla", "--data-dir", str(tmp_path)])

    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("lers-ray: error: ")
    assert error.count("\n") == 1
    assert "lers-ray data fetch gowalla" in error


def test_stats_unknown_name_exit_2(tmp_path: Path, capsys) -> None:
    code = _run(["data", "stats", "no-such-dataset", "--data-dir", str(tmp_path)])

    assert code == 2
    assert "unknown dataset 'no-such-dataset'" in capsys.readouterr().err


def test_fetch_unreachable_exit_2(tmp_path: Path, capsys) -> None:
    code = _run(
        [
            "data",
            "fetch",
            "gowalla",
            "--data-dir",
            str(tmp_path),
            "--base-url",
            "http://127.0.0.1:1",
        ]
    )

    error = capsys.readouterr().err
    assert code == 2
    assert "http://127.0.0.1:1/kuandeng/LightGCN/master/Data/gowalla/train.txt" in error


def test_fetch_rejects_unfetchable_name() -> None:
    with pytest.raises(SystemExit):
        _run(["data", "fetch", "ml-1m"])
