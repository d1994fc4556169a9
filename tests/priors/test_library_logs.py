"""diffusers' and transformers' messages go through the logging tree once a prior is loaded
(:mod:`lucid_app.priors.library_logs`): none is written to a stream the libraries bound at import, which under
pytest's capture is closed by the time they warn ("--- Logging error ---" and a traceback in the next test's stderr,
as ``tests/cli`` run alone showed)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lucid_app.config import ModelConfig


def test_loading_a_prior_routes_the_libraries_logs(dataset: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import lucid_app.priors.library_logs as library_logs
    from lucid_app.priors import PriorError, load_prior

    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(library_logs, "route_library_logs", lambda *libraries: calls.append(libraries))
    load_prior(f"multiview:{dataset}", ModelConfig(multiview_resolution=16))
    assert calls == [("diffusers",)]  # the multi-view prior imports no transformers
    with pytest.raises(PriorError):
        load_prior(str(tmp_path / "missing_sd_folder"), ModelConfig())
    assert calls[-1] == ("diffusers", "transformers")


def test_a_library_warning_reaches_the_root_handlers_and_no_stream_of_its_own(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    from lucid_app.priors.library_logs import route_library_logs

    route_library_logs("diffusers", "transformers")
    for name, library in (("diffusers", diffusers_logging), ("transformers", transformers_logging)):
        root = logging.getLogger(name)
        # The libraries' own handler is a plain StreamHandler (pytest's capture handlers are subclasses).
        assert [h for h in root.handlers if type(h) is logging.StreamHandler] == [] and root.propagate, name
        with caplog.at_level(logging.WARNING):
            library.get_logger(f"{name}.lucid_test").warning("%s says hello", name)
        assert f"{name} says hello" in caplog.text
    err = capsys.readouterr().err
    assert "says hello" not in err and "Logging error" not in err
