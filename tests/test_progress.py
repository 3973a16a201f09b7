"""A progress bar on a terminal, none in logs or pipes."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path


def _run_in_terminal(argv: list[str]) -> str:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower,
                            close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_subjects_progress_bar_on_a_terminal(tiny_bids: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "spinal_bidsapp", str(tiny_bids), str(tmp_path / "out"),
            "participant", "--participant-label", "01", "02", "--skip-bids-validation",
            "--nprocs", "1"]
    assert "subjects:" in _run_in_terminal(argv)
    piped = subprocess.run([*argv[:4], str(tmp_path / "out2"), *argv[5:]], capture_output=True,
                           text=True, check=True)
    assert "subjects:" not in piped.stderr
