"""`python -m autograd_magic run script.py`: each script run plain and under the runner, in real subprocesses.

The runner must be invisible to the script (the same stdout, the same stderr up to the report, the
same exit status and traceback) and print the report of what autograd did to stderr at the end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autograd_magic.script import main, parse

ROOT = Path(__file__).resolve().parent.parent

TRAIN = '''\
"""A tiny regression, trained for as many steps as its first argument says."""
import sys

import torch
from torch import nn

steps = int(sys.argv[1])
torch.manual_seed(0)
model = nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(8, 3)
y = torch.randn(8, 1)
for step in range(steps):
    opt.zero_grad()
    pred = model(x)
    loss = ((pred - y) ** 2).mean()
    loss.backward()
    opt.step()
    print(f"step {step} loss {loss.item():.4f}")

if __name__ == "__main__":
    print("main block", sys.argv, __doc__)
'''

RAISES = '''\
import torch

def project(a):
    return a @ torch.ones(3, 2)

x = torch.ones(2, 2, requires_grad=True)
print("before")
try:
    torch.ones(2) @ torch.ones(3)
except RuntimeError as inner:
    y = project(x)
'''

EXITS = '''\
import sys
import torch
w = torch.ones(2, requires_grad=True)
(w * 3).sum().backward()
print(w.grad)
sys.exit(3)
'''

AS_MAIN = '''\
import sys
import __main__
print(__name__, __file__, __spec__, __package__, __cached__, type(__loader__).__name__, __loader__.name)
print(sorted(globals()), __main__.__dict__ is globals(), sys.argv, sys.path[0])
import helper
print(helper.NAME)
'''

INTERRUPTED = '''\
import torch
t = torch.ones(2, requires_grad=True) * 2
raise KeyboardInterrupt
'''

IN_MAIN = '''\
import torch


def main():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(5):
        loss = model(torch.randn(16, 4)).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    print("trained", float(loss))


if __name__ == "__main__":
    main()
'''

SCRIPTS = {"train.py": TRAIN, "in_main.py": IN_MAIN, "raises.py": RAISES, "exits.py": EXITS, "as_main.py": AS_MAIN,
           "interrupted.py": INTERRUPTED, "broken.py": "x = (\n", "sub/helper.py": "NAME = 'helper beside it'\n"}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scripts")
    for name, source in SCRIPTS.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(source)
    (folder / "sub" / "as_main.py").write_text(AS_MAIN)  # its own folder goes first on sys.path, not the cwd
    return folder


def run(folder: Path, *words: str, recorded: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "autograd_magic", "run", *words] if recorded else [sys.executable, *words]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300, env=env)


def run_both(folder: Path, *words: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """The plain run and the recorded one, checked to match: same stdout and status, stderr up to the report."""
    plain, ours = run(folder, *words, recorded=False), run(folder, *words)
    assert ours.stdout == plain.stdout
    assert ours.returncode == plain.returncode, ours.stderr
    assert "failed while" not in ours.stderr  # no internal error of ours
    return plain, ours


def report_of(plain: subprocess.CompletedProcess[str], ours: subprocess.CompletedProcess[str]) -> str:
    """The report: all that the recorded run's stderr holds beyond the plain run's, in one piece."""
    start = ours.stderr.index("autograd: ")
    before, rest = ours.stderr[:start], ours.stderr[start:]
    after = plain.stderr[len(before):]
    assert plain.stderr.startswith(before) and rest.endswith(after)
    return rest[:len(rest) - len(after)]


def test_a_training_script_prints_as_plain_then_the_report_names_its_lines(scripts: Path) -> None:
    plain, ours = run_both(scripts, "train.py", "4")
    assert plain.returncode == 0 and plain.stderr == ""
    assert "step 3 loss" in ours.stdout and "main block ['train.py', '4'] A tiny regression" in ours.stdout
    report = report_of(plain, ours)
    assert report.startswith("autograd: ") and ours.stderr.endswith(report)
    assert "Training: 4 steps (backward at line 17)" in report
    assert re.search(r"\n  loss +scalar +float32 +True +False +MeanBackward0 +16\n", report)
    assert re.search(r"\n  pred +\(8, 1\) .* 15\n", report)
    assert "model.weight" in report and "Graph 1: root loss (line 16)" in report
    assert "(line 15: model(x))" in report and "[graph-break] line 19" in report


def test_a_model_held_only_by_mains_locals_is_named_boxed_and_followed(scripts: Path, tmp_path: Path) -> None:
    plain, ours = run_both(scripts, "in_main.py")
    report = report_of(plain, ours)
    assert "Training: 5 steps (backward at line 10)" in report
    for name in ("model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"):
        assert re.search(rf"\n  {re.escape(name)} +[0-9.]+ ", report), name  # a row of the Training table
    assert "model.0.weight AccumulateGrad" in report and "ReluBackward0 in model.1" in report
    data = tmp_path / "report.json"
    assert run(scripts, f"--save={data}", "-q", "in_main.py").returncode == 0
    saved = json.loads(data.read_text())
    boxes = {m["name"]: (m["cls"], m["parent"]) for m in saved["graphs"][0]["modules"]}
    assert boxes == {"model": ("Sequential", None), "model.0": ("Linear", "model"), "model.1": ("ReLU", "model"),
                     "model.2": ("Linear", "model")}
    assert saved["training"]["parameters"] == ["model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"]


def test_the_script_runs_as_main_with_its_argv_and_its_folder_first_on_the_path(scripts: Path) -> None:
    plain, ours = run_both(scripts, "sub/as_main.py", "--save", "x.html", "-q")  # after the script: all its own
    assert plain.returncode == 0, plain.stderr
    assert "['sub/as_main.py', '--save', 'x.html', '-q']" in ours.stdout and "helper beside it" in ours.stdout
    assert not (scripts / "x.html").exists()
    assert report_of(plain, ours).startswith("autograd: 0 torch calls")


def test_an_uncaught_exception_prints_the_plain_traceback_after_the_report(scripts: Path) -> None:
    plain, ours = run_both(scripts, "raises.py")
    assert plain.returncode == 1 and "Traceback (most recent call last)" in plain.stderr
    assert "During handling of the above exception" in plain.stderr  # a chained one: both tracebacks alike
    assert "autograd_magic" not in ours.stderr.split("Traceback", 1)[1]  # none of our frames
    report = report_of(plain, ours)
    assert "RuntimeError at line 4: mat1 and mat2 shapes cannot be multiplied" in report
    assert re.search(r"\n  x +\(2, 2\) +float32 +True +True +- +6\n", report)


def test_sys_exit_keeps_its_status_and_is_no_error_in_the_report(scripts: Path) -> None:
    plain, ours = run_both(scripts, "exits.py")
    assert plain.returncode == 3
    report = report_of(plain, ours)
    assert "no diagnostics" in report.splitlines()[0] and "w: [3, 3]" in report


def test_keyboard_interrupt_ends_the_process_as_plain_does(scripts: Path) -> None:
    plain, ours = run_both(scripts, "interrupted.py")  # killed by SIGINT after printing the traceback
    assert plain.returncode != 0 and plain.stderr.rstrip().endswith("KeyboardInterrupt")
    assert "KeyboardInterrupt at line 3" in report_of(plain, ours)


def test_a_syntax_error_reads_as_plain_and_runs_nothing(scripts: Path) -> None:
    plain, ours = run_both(scripts, "broken.py")
    assert plain.returncode == 1 and ours.stderr == plain.stderr


def test_save_writes_the_html_and_json_reports(scripts: Path, tmp_path: Path) -> None:
    html, data = tmp_path / "report.html", tmp_path / "report.json"
    ours = run(scripts, "--save", str(html), f"--save={data}", "-q", "train.py", "2")
    assert ours.returncode == 0 and ours.stderr == "", ours.stderr  # -q: saved, not printed
    saved = json.loads(data.read_text())
    assert saved["tensors"]["loss"]["line"] == 16 and saved["first_line"] == 1
    page = html.read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "MeanBackward0" in page


@pytest.mark.parametrize(("words", "message"), [
    ((), "the first word must be 'run'"),
    (("train.py",), "did you mean: "),
    (("run",), "the script to run is missing"),
    (("run", "--save"), "expected one argument"),
    (("run", "--save", "report.txt", "train.py"), "--save report.txt: the name must end in .json"),
    (("run", "--bogus", "train.py"), "unrecognized arguments: --bogus"),
    (("run", "--depth", "-1", "train.py"), "--depth must be 0 or more"),
])
def test_bad_options_print_the_usage_and_exit_2(words: tuple[str, ...], message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(list(words))
    captured = capsys.readouterr()
    assert exited.value.code == 2 and captured.out == ""
    assert captured.err.startswith("usage: ") and message in captured.err


def test_options_end_at_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    options, script, args = parse(["run", "--save", "a.html", "-q", "--", "-odd.py", "--save", "b.json", "--"])
    assert (options.save, options.quiet, script, args) == (["a.html"], True, "-odd.py", ["--save", "b.json", "--"])
    with pytest.raises(SystemExit) as exited:
        parse(["run", "--help"])
    assert exited.value.code == 0 and "every word after it is the script's own" in capsys.readouterr().out


def test_a_bad_option_exits_2_before_running_the_script(scripts: Path) -> None:
    done = run(scripts, "--max-nodes", "0", "train.py", "1")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("usage: ") and "--max-nodes must be a positive number" in done.stderr


def test_a_missing_script_is_reported_as_python_reports_it(scripts: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    plain = run(scripts, "nope.py", recorded=False)
    monkeypatch.chdir(scripts)
    assert main(["run", "nope.py"]) == plain.returncode == 2
    assert capsys.readouterr().err.split(":", 1)[1] == plain.stderr.split(":", 1)[1]  # after the program's name


def test_the_console_script_is_declared() -> None:
    declared = re.search(r'^autograd-magic = "([\w.]+):(\w+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared is not None
    module = __import__(declared.group(1), fromlist=[declared.group(2)])
    assert callable(getattr(module, declared.group(2)))
