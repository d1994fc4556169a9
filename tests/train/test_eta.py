"""The run-time estimate's notice (``lucid_app.train.eta``): only for runs of hours."""

from __future__ import annotations



from lucid_app.train.eta import eta_notice


def test_eta_notice_only_for_runs_of_hours() -> None:
    assert eta_notice(0.5, 5000) is None and eta_notice(10.0, 0) is None
    notice = eta_notice(300.0, 4999)
    assert notice is not None and "17 days" in notice and "--preset demo" in notice and "GPU" in notice
    assert "4.2 h" in eta_notice(3.0, 5000)
