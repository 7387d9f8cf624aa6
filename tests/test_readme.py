"""The README's tour runs as written and prints what the README says it prints."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs_and_reaches_the_stated_accuracy() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python block"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md", "exec"), {})
    acc = float(re.search(r"test accuracy ([0-9.]+)", out.getvalue()).group(1))
    stated = float(re.search(r"# (0\.\d+)", blocks[0]).group(1))
    assert abs(acc - stated) < 0.005, (acc, stated)
    assert "total parameters: 89,810" in out.getvalue()
