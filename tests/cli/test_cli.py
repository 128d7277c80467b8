from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A command whose output pipe closed under it (``livecart export ... | head``), made deterministic by a
# command that raises BrokenPipeError itself after writing a line.
SCRIPT = """
import sys, types
import livecart.cli.main as cli
mod = types.ModuleType("broken_pipe_cmd")
def run(args):
    print("first line", flush=True)
    raise BrokenPipeError(32, "Broken pipe")
mod.run = run
sys.modules["broken_pipe_cmd"] = mod
cli.COMMANDS["report"] = "broken_pipe_cmd:run"
sys.exit(cli.main(["report", "x.toml"]))
"""


def test_a_closed_output_pipe_ends_the_command_quietly_with_sigpipe_status() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 141
    assert proc.stdout == b"first line\n"
    assert b"Traceback" not in proc.stderr


def test_an_unbuilt_command_and_a_bad_config_are_readable_errors(tmp_path: object) -> None:
    proc = subprocess.run([sys.executable, "-m", "livecart.cli.main", "report", "/nonexistent/stream.toml"],
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert b"cannot read the config" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_an_output_or_folder_that_cannot_be_written_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    assert subprocess.run([sys.executable, "-m", "livecart.cli.main", "demo", "--dir", str(demo), "--plain"],
                          capture_output=True, timeout=120, check=False).returncode == 0
    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    cfg = str(demo / "demo.toml")
    cases = {
        ("report", cfg, "--html", str(tmp_path / "no" / "such" / "x.html")): "No such file or directory",
        ("report", cfg, "--html", str(tmp_path)): "Is a directory",
        ("export", cfg, "--format", "csv", "-o", str(tmp_path / "no" / "x.csv")): "No such file or directory",
        ("demo", "--dir", str(a_file), "--plain"): f"{a_file} is a file, not a directory",
    }
    for args, said in cases.items():
        proc = subprocess.run([sys.executable, "-m", "livecart.cli.main", *args], capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, args
        assert f"livecart {args[0]}: {said}" in proc.stderr, (args, proc.stderr)
        assert "writing" not in proc.stdout, args  # not "writing ... to" a place it then refused


@pytest.mark.parametrize("argv", [
    ["report", "x.toml", "--json", "--html", "out.html"],  # --json used to be dropped silently
    ["report", "x.toml", "--html", ""],  # used to print the text report
    ["demo", "--dir", ""],  # used to write into the current folder
    ["export", "x.toml", "--format", "csv", "-o", " "],
])
def test_contradictory_or_empty_arguments_are_bad_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    import livecart.cli.main as cli

    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "not allowed with" in err or "must name a file or folder" in err
