"""The command-line convention: every command has `--help`, a `HatError` is one stderr line and exit code 2,
anything else keeps its traceback; scripts are shims of the commands; console scripts resolve."""

import importlib
import importlib.util
import tomllib
from pathlib import Path

import pytest
from support import REPO, load_script

import hat.config
from hat.cli import UsageError, run, write_output
from hat.config import ConfigError

COMMANDS = ["train", "evaluate", "generate", "compress", "convert", "export", "import_hat"]
# scripts/<name>.py -> the command it is a shim of.
SHIMS = {
    "evaluate": "evaluate", "generate": "generate", "compress": "compress", "convert_llama": "convert",
    "export": "export", "import_hat": "import_hat",
}  # fmt: skip


def _help(main) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_examples(name: str, capsys):
    _help(importlib.import_module(f"hat.cli.{name}").main)
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "examples:\n" in out


def test_shims_run_the_commands_and_every_script_has_help():
    spec = importlib.util.spec_from_file_location("hat_train_shim", REPO / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    assert train.main is importlib.import_module("hat.cli.train").main
    scripts = sorted(path.stem for path in (REPO / "scripts").glob("*.py"))
    assert set(SHIMS) <= set(scripts)
    for name in scripts:
        module = load_script(name)
        if name in SHIMS:
            assert module.main is importlib.import_module(f"hat.cli.{SHIMS[name]}").main, name
        _help(module.main)


def test_every_benchmark_has_help():
    benchmarks = sorted(path.stem for path in (REPO / "benchmarks").glob("*.py"))
    assert len(benchmarks) >= 7
    for name in benchmarks:
        _help(load_script(name, "benchmarks").main)


def test_console_scripts_resolve():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"hat-train", "hat-convert", "hat-export", "hat-import", "hat-compress"} <= set(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_hat_error_is_one_line_and_exit_code_2(capsys):
    assert run(importlib.import_module("hat.cli.train").main, ["nope.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config file not found: nope.yaml") and err.count("\n") == 1


@pytest.mark.parametrize("bug", [RuntimeError("a bug"), ValueError("a bug in numpy's hands")])
def test_other_exceptions_propagate(monkeypatch, bug: Exception):
    def load_config(*args, **kwargs):
        raise bug

    monkeypatch.setattr(hat.config, "load_config", load_config)
    with pytest.raises(type(bug), match="a bug"):
        run(importlib.import_module("hat.cli.train").main, ["workdir=runs/x"])


def test_main_raises_rather_than_printing():
    with pytest.raises(ConfigError, match="config file not found"):
        importlib.import_module("hat.cli.train").main(["nope.yaml"])


def test_bad_argument_values_are_usage_errors(tmp_path: Path, capsys):
    compress = importlib.import_module("hat.cli.compress").main
    with pytest.raises(SystemExit) as info:
        compress(["encode", "m1", "in", "out", "--segment-bytes", "0"])
    assert info.value.code == 2 and "--segment-bytes: must be at least 1, got 0" in capsys.readouterr().err
    assert run(compress, ["encode", str(tmp_path / "m1"), str(tmp_path / "missing.txt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read {tmp_path / 'missing.txt'}") and err.count("\n") == 1
    with pytest.raises(UsageError, match="cannot write .*no such dir"):
        write_output(tmp_path / "no such dir" / "out.eqac", b"")


def test_keyboard_interrupt_is_exit_code_130(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert run(interrupted) == 130
    assert capsys.readouterr().err == "interrupted\n"


# ---- user errors that surfaced as bare exceptions are HatErrors where they are detected ---------------------------


def test_write_failures_in_a_staging_directory_are_one_line_errors(tmp_path: Path):
    from hat.checkpoint import CheckpointError
    from hat.checkpoint.store import staging_dir
    from hat.data.atomic import OutputPathError
    from hat.errors import StorageError

    (tmp_path / "a file").write_text("")
    with pytest.raises(OutputPathError, match="cannot create .*a file/out: .*choose a path in a writable directory"):
        with staging_dir(tmp_path / "a file" / "out"):
            pass
    with pytest.raises(StorageError, match=r"the parameter store .*out: no space left on the device; nothing was kept"):
        with staging_dir(tmp_path / "out") as partial:
            raise OSError(28, "No space left on device", str(partial / "shard"))
    with pytest.raises(CheckpointError, match="as it was"):
        with staging_dir(tmp_path / "out"):
            raise CheckpointError("as it was")
    with pytest.raises(OSError, match="Input/output error"):  # not the storage's fault: a bug or a bad input
        with staging_dir(tmp_path / "out"):
            raise OSError(5, "Input/output error")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a file"]


def test_config_and_spec_errors_are_hat_errors(tmp_path: Path):
    from hat.compress.equal_info import WindowSpec, WindowSpecError
    from hat.convert.llama import ConversionError, read_llama_config

    (tmp_path / "base.yaml").write_text("train: [unclosed\n")
    (tmp_path / "run.yaml").write_text("base: base.yaml\n")
    with pytest.raises(ConfigError, match="base.yaml is not valid YAML"):
        hat.config.load_config(tmp_path / "run.yaml")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConversionError, match="config.json is not valid JSON"):
        read_llama_config(tmp_path)
    with pytest.raises(WindowSpecError, match=r"window_bits \(12\) must be a multiple of token_bits \(8\)"):
        WindowSpec(window_bits=12, token_bits=8)
