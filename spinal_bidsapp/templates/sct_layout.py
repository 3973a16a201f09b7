"""SCT template folders: the ``info_label.txt`` index SCT reads them by, written and read by
SCT 7.3's own rules.

A template folder in SCT's layout (PAM50, or the SCT-ready copy of a group template) is
``DIR/template/`` with ``info_label.txt`` listing ``ID, name, file``; ``sct_register_to_template
-t DIR`` and ``sct_warp_template`` find the contrast, cord, discs and levels through those IDs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from spinal_bidsapp.errors import InputDataError, MissingInputError
from spinal_bidsapp.runtime.files import write_text

INFO_LABEL = "info_label.txt"
"""The index SCT reads template folders by (``-t DIR`` looks in ``DIR/template/``)."""
INFO_LABEL_IDS = {"t1": 0, "t2": 1, "t2s": 2, "cord": 3, "levels": 7, "label_disc": 10,
                  "centerline": 13, "rootlets": 16, "label_rootlets": 17}
"""PAM50's IDs for the files SCT tools look up: ``sct_register_to_template`` takes the contrast
(0-2, ``-c``), the cord (3, ``-s-template-id``), the disc labels (10, ``-ldisc``), the levels
(7, ``-l`` body labels), the rootlets and their mid-points (16, 17, ``-lrootlet``);
``sct_warp_template`` warps every listed file."""
_INFO_LABEL_SECTION = re.compile(r"^# Keyword=(IndivLabels|CombinedLabels|MAPLabels)\s*(.*)$")
_INFO_LABEL_ENTRY = re.compile(r"^(\d+), (.*), (.*)$")


def write_info_label(folder: Path, labels: Sequence[tuple[int, str, str]]) -> Path:
    """Write ``folder/info_label.txt`` listing ``(ID, name, file)`` as SCT 7.3 writes it
    (``spinalcordtoolbox/metadata.py:InfoLabel.save``), so SCT's reader and
    :func:`read_info_label` accept it.

    Raises
    ------
    ValueError
        A name or file SCT's line format cannot carry (``", "`` in a file name, a line break),
        or a file absent from ``folder``: SCT refuses the whole folder for either.
    """
    lines = ["# Keyword=IndivLabels (Please DO NOT change this line)", "# ID, name, file"]
    for label_id, name, file in labels:
        line = f"{int(label_id)}, {name}, {file}"
        match = _INFO_LABEL_ENTRY.match(line)
        if match is None or match.group(3) != file or "\n" in line:
            raise ValueError(f"info_label.txt cannot list {line!r}")
        if not (folder / file).is_file():
            raise ValueError(f"info_label.txt would list {file}, absent from {folder}")
        lines.append(line)
    path = folder / INFO_LABEL
    write_text(path, "\n".join(lines) + "\n")
    return path


def read_info_label(path: Path) -> dict[int, str]:
    """Label ID -> file name of the ``IndivLabels`` section of an SCT ``info_label.txt``, read
    by SCT 7.3's rules (``spinalcordtoolbox/metadata.py:InfoLabel.load``), so a file this
    accepts is one SCT accepts.

    Those rules: blank lines and ``#`` lines are skipped, except ``# Keyword=IndivLabels``,
    ``CombinedLabels`` or ``MAPLabels``, which open a section (any other keyword, such as
    ``IDs_templates``, is a mere comment); ``IndivLabels`` lines are ``ID, name, file`` (the
    file after the last ``", "``) and the file must exist next to ``info_label.txt``; the other
    sections are not needed here and are skipped; a line outside any section is an error. Of a
    repeated ID the first line counts, as in SCT's ``get_file_label``.

    Raises
    ------
    InputDataError
        A line SCT cannot parse (the message names the file and the line).
    MissingInputError
        A listed file is absent.
    """
    ids: dict[int, str] = {}
    section = ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.rstrip()
        heading = _INFO_LABEL_SECTION.match(line)
        if heading is not None:
            section = heading.group(1)
            continue
        if not line or line.startswith("#") or section in ("CombinedLabels", "MAPLabels"):
            continue
        entry = _INFO_LABEL_ENTRY.match(line) if section == "IndivLabels" else None
        if entry is None:
            where = "in its IndivLabels section" if section else (
                "before any '# Keyword=IndivLabels' line")
            raise InputDataError(f"{path} line {number} ({line!r}) cannot be parsed {where}; "
                                 "SCT 7.3 refuses it: list files as 'ID, name, file' under "
                                 "'# Keyword=IndivLabels (Please DO NOT change this line)'")
        if not (path.parent / entry.group(3)).is_file():
            raise MissingInputError(f"{path} line {number} lists {entry.group(3)}, which is "
                                    f"absent from {path.parent}; add the file or remove the line")
        ids.setdefault(int(entry.group(1)), entry.group(3))
    return ids
