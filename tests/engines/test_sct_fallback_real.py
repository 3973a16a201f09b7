"""How the SCT engine tells "SCT cannot do this here" from "the data is bad", against real SCT.

Marked ``sct``: SCT 7.3 from ``real_tool_env("sct")`` (installed by ``make real-tools``, without
its deep-learning models). What is checked:

* :meth:`SctEngine.unavailable` agrees with SCT's own model check (``models.is_valid``, run in
  SCT's Python) for every ``sct_deepseg`` task we use;
* a real ``sct_deepseg`` run whose model is missing (the network blocked by a dead proxy) becomes
  :class:`EngineUnavailable` with the cause read from SCT's log;
* a real SCT failure caused by the data stays an :class:`ExternalToolError` whose message shows
  SCT's own last lines, without ANSI codes or SCT's closing ``Total runtime`` line, and the log.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from spinal_bidsapp.engines import resolve_participant_engine
from spinal_bidsapp.engines.sct.commands import SctEngine
from spinal_bidsapp.engines.sct.install import DEEPSEG_MODELS, missing_models
from spinal_bidsapp.engines.tools import ExternalToolError
from spinal_bidsapp.errors import EngineUnavailable
from tests.conftest import real_tool_env

pytestmark = pytest.mark.sct


@pytest.fixture(scope="module")
def sct_env() -> Iterator[dict[str, str]]:
    env = {**real_tool_env("sct"), **{name: "http://127.0.0.1:9" for name in (
        "HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")}}  # SCT never downloads here
    saved = dict(os.environ)
    os.environ.update(env)  # run_tool passes this process's environment to SCT
    try:
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def engine(sct_env: dict[str, str]) -> SctEngine:
    choice = resolve_participant_engine("sct", sct_dir=Path(sct_env["SCT_DIR"]),
                                        search_path=sct_env["PATH"])
    assert choice.sct is not None
    return SctEngine(choice.sct, threads=1, timeout_s=600)


def _sct_says_installed(engine: SctEngine, model: str) -> bool:
    """SCT's own verdict (``spinalcordtoolbox.deepseg.models.is_valid``), in SCT's Python."""
    code = ("from spinalcordtoolbox.deepseg import models as m; import sys; "
            "sys.stdout.write(str(m.is_valid(m.find_model_folder_paths(m.folder(sys.argv[1])))))")
    python = engine.install.sct_dir / "python" / "envs" / "venv_sct" / "bin" / "python"
    if not python.is_file():  # install-real-tools.sh keeps SCT's venv next to the source tree
        python = engine.install.sct_dir.parent / "venv" / "bin" / "python"
    done = subprocess.run([str(python), "-c", code, model], capture_output=True, text=True,
                          check=True, timeout=120)
    return done.stdout.strip() == "True"


def test_model_check_agrees_with_sct(engine: SctEngine) -> None:
    for task, models in DEEPSEG_MODELS.items():
        for model in models:
            ours = model not in missing_models(engine.install, task)
            assert ours == _sct_says_installed(engine, model), (task, model)
    capability = {"spinalcord": "segment_cord", "spine": "spine", "rootlets": "rootlets"}
    for task, name in capability.items():
        reason = engine.unavailable(name)  # type: ignore[arg-type]
        if missing_models(engine.install, task):
            assert reason is not None and f"sct_deepseg {task} -install" in reason
        else:
            assert reason is None
    assert engine.unavailable("register_to_template") is None
    assert engine.unavailable("measure_cord") is None


def test_missing_model_at_run_time_is_engine_unavailable(engine: SctEngine, bids_real: Path,
                                                         tmp_path: Path) -> None:
    if not missing_models(engine.install, "rootlets"):
        pytest.skip("the rootlets model is installed here: nothing to fall back from")
    image = bids_real / "sub-errsm30" / "anat" / "sub-errsm30_T2w.nii.gz"
    out = tmp_path / "rootlets.nii.gz"
    with pytest.raises(EngineUnavailable) as excinfo:  # what SCT does if asked anyway
        engine._run(["sct_deepseg", "rootlets", "-i", str(image), "-o", str(out)],
                    step="segment_rootlets", out_dir=tmp_path, outputs=(out,))
    message = str(excinfo.value)
    assert "model_seg_spinal_rootlets_nnunet is not installed" in message
    assert str(tmp_path / "segment_rootlets.log") in message
    assert "\x1b" not in message and "Total runtime" not in message
    with pytest.raises(EngineUnavailable, match="sct_deepseg rootlets -install"):
        engine.segment_rootlets(image, contrast="T2w", out_dir=tmp_path / "early")
    assert not (tmp_path / "early" / "segment_rootlets.log").exists()  # refused before running


def test_data_failure_stays_an_error_with_sct_own_last_lines(engine: SctEngine,
                                                             tmp_path: Path) -> None:
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    out = tmp_path / "csa.csv"
    with pytest.raises(ExternalToolError) as excinfo:
        engine._run(["sct_process_segmentation", "-i", str(broken), "-o", str(out)],
                    step="measure", out_dir=tmp_path, outputs=(out,))
    assert not isinstance(excinfo.value, EngineUnavailable)
    message = str(excinfo.value)
    assert f"ImageFileError: File {broken} is not a gzip file" in message
    assert "\x1b" not in message and "Total runtime" not in message
    assert f"full log: {tmp_path / 'measure.log'}" in message
