"""Output files are written whole or not at all: a full disk under `report` or `scale` is one
line naming the file, and leaves no empty, cut or temporary file behind."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.test_cli_offline import store  # noqa: F401  (a fixture)

from slm_mux import outfile
from slm_mux.cli import main


def disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes fail as on a full disk, when the data reaches it (at ``fsync``)."""

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)


@pytest.mark.parametrize("command", ["report", "scale"])
def test_a_full_disk_names_the_file_and_keeps_the_old_one(
    tmp_path: Path,
    store: tuple[Path, object],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    db, _ = store
    out = tmp_path / "out"
    argv = [command, "--store", str(db), "--trials", "1", "--max-models", "2", "--out", str(out)]
    assert main(argv) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    capsys.readouterr()
    disk_full(monkeypatch)
    assert main(argv) == 1
    err = capsys.readouterr().err
    # The plots come first, then report.md and report.html.
    assert err == f"slm-mux: error: {out / 'accuracy_vs_k.png'}: No space left on device\n"
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_a_failed_first_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk_full(monkeypatch)
    target = tmp_path / "report.md"
    with pytest.raises(OSError) as caught:
        outfile.write_text(target, "# report\n")
    assert caught.value.filename == str(target)
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_written_file_gets_the_mode_of_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    old = os.umask(0o022)
    try:
        outfile.write_text(target, "# report\n")
    finally:
        os.umask(old)
    assert target.read_text() == "# report\n"
    assert target.stat().st_mode & 0o777 == 0o644


_REPORT_ON_A_FULL_DISK = """
import sys
from slm_mux.cli import main
status = main(["report", "--store", sys.argv[1], "--trials", "1", "--out", sys.argv[2]])
print("exit", status)
"""


@pytest.mark.skipif(
    sys.platform != "linux" or shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs a private tmpfs mount (unshare -m, as root)",
)
def test_report_onto_a_really_full_disk(
    tmp_path: Path,
    store: tuple[Path, object],  # noqa: F811
) -> None:
    db, _ = store
    out = tmp_path / "full"
    out.mkdir()
    script = (
        f'mount -t tmpfs -o size=8k tmpfs "$2" && exec "{sys.executable}" -c '
        f'\'{_REPORT_ON_A_FULL_DISK}\' "$1" "$2"; ls -A "$2"'
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(db), str(out)],
        capture_output=True,
        text=True,
    )
    if "mount" in done.stderr and "exit" not in done.stdout:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    assert done.stdout == "exit 1\n", done.stderr  # and no file left on the mount
    assert done.stderr.strip().splitlines()[-1] == (
        f"slm-mux: error: {out / 'accuracy_vs_k.png'}: No space left on device"
    )
