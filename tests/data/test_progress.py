"""Issue 15, data case 6: decoding shows progress (tqdm on a terminal, plain lines otherwise)."""

import sys
import types

import pytest

from bnlab.data import load_cifar10, load_image_folder
from bnlab.data import progress as progress_mod


@pytest.fixture
def folder(tmp_path, rng, kit, cache, monkeypatch):
    monkeypatch.setattr(progress_mod, "PLAIN_INTERVAL", 0.0)  # a line after every image
    return kit.write_tar(tmp_path / "images.tar.gz", kit.folder_items(rng))


def _tty(monkeypatch, yes):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: yes, raising=False)


def test_plain_lines_when_stderr_is_not_a_terminal(folder, capsys, monkeypatch):
    _tty(monkeypatch, False)
    load_cifar10(folder)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "load_image_folder: decoding images.tar.gz: 1/15 images (6%)"
    assert err[-1].endswith("15/15 images (100%)")


def test_progress_false_prints_nothing(folder, capsys, monkeypatch):
    _tty(monkeypatch, True)
    load_cifar10(folder, progress=False)
    assert capsys.readouterr().err == ""


def test_a_quick_decode_prints_no_plain_line(folder, capsys, monkeypatch):
    _tty(monkeypatch, False)
    monkeypatch.setattr(progress_mod, "PLAIN_INTERVAL", 3600.0)
    load_image_folder(folder)
    assert capsys.readouterr().err == ""


def test_a_large_cache_file_is_named_once_when_written(folder, capsys, monkeypatch):
    from bnlab.data import imagefolder

    _tty(monkeypatch, False)
    monkeypatch.setattr(progress_mod, "PLAIN_INTERVAL", 3600.0)
    monkeypatch.setattr(imagefolder, "SAY_CACHE_BYTES", 0)  # the test's images are tiny
    load_image_folder(folder)
    err = capsys.readouterr().err
    assert err.startswith("bnlab: cached the decoded images in ") and err.count("\n") == 1
    load_image_folder(folder)  # read from the cache: nothing written, nothing said
    assert capsys.readouterr().err == ""


def test_tqdm_bar_on_a_terminal(folder, monkeypatch):
    calls = []

    class FakeBar:
        def __init__(self, **kw):
            calls.append(("init", kw["total"]))

        def update(self, n):
            calls.append(("update", n))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeBar))
    _tty(monkeypatch, True)
    load_image_folder(folder)
    assert calls[0] == ("init", 15) and calls[-1] == ("close",)
    assert sum(c[1] for c in calls if c[0] == "update") == 15


def test_terminal_without_tqdm_falls_back_to_plain_lines(folder, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    _tty(monkeypatch, True)
    load_image_folder(folder)
    assert capsys.readouterr().err.splitlines()[-1].endswith("15/15 images (100%)")


def test_cached_load_shows_nothing(folder, capsys, monkeypatch):
    load_image_folder(folder, progress=False)
    _tty(monkeypatch, False)
    load_image_folder(folder)
    assert capsys.readouterr().err == ""
