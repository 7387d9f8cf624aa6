"""Issue 23, high 7: a small file with a huge deflated member is refused from the zip directory
and the .npy headers, before anything is inflated (memory stays small)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from bnlab.deploy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bnlab.layers import BatchNorm, Dense, Sequential


def _bomb(path, tmp_path, key: str, shape: tuple[int, ...]) -> None:
    """A valid checkpoint plus one deflated member of zeros declaring ``shape`` float32."""
    model = Sequential([Dense(4, 6, seed=0), BatchNorm(6)])
    good = save_checkpoint(tmp_path / "good.npz", model)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != f"{key}.npy":
                dst.writestr(info.filename, src.read(info))
        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
        with dst.open(f"{key}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            zeros = bytes(1 << 24)
            for _ in range(int(np.prod(shape)) * 4 // len(zeros)):
                f.write(zeros)
    assert path.stat().st_size < 4 << 20


def _peak_rss_mb(path) -> tuple[str, float]:
    code = textwrap.dedent(
        f"""
        from bnlab.deploy.checkpoint import load_checkpoint
        try:
            load_checkpoint({str(path)!r})
            print("LOADED")
        except Exception as e:
            print(type(e).__name__ + ": " + str(e))
        # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's peak across exec)
        hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0]
        print(int(hwm.split()[1]) / 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    message, peak = out.stdout.strip().rsplit("\n", 1)
    return message, float(peak)


@pytest.mark.parametrize("key", ["model/0.W", "optimizer/x"])
def test_one_gib_member_in_a_small_file_is_refused_before_inflating(tmp_path, key):
    path = tmp_path / "bomb.npz"
    _bomb(path, tmp_path, key, (1 << 28,))  # 1 GiB of float32 zeros, about 1 MB deflated
    message, peak_mb = _peak_rss_mb(path)
    assert message.startswith("CheckpointError"), message
    assert "bomb.npz" in message
    assert peak_mb < 600, f"peak RSS {peak_mb:.0f} MB: the member was inflated"


def test_extra_member_beside_a_small_model_is_refused(tmp_path):
    path = tmp_path / "bomb.npz"
    _bomb(path, tmp_path, "optimizer/x", (1 << 22,))  # 16 MB next to a 60-parameter model
    with pytest.raises(CheckpointError, match=r"besides the model's .*crafted or damaged"):
        load_checkpoint(path)
    meta = json.loads(str(np.load(path)["__meta__"]))
    assert meta["format"] == "bnlab-checkpoint"
