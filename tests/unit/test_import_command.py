"""``conveyor import``'s progress line and summary (the HTTP side is tested end to end)."""

from __future__ import annotations

from cli.import_client import RateMeter, progress_line, summary


def _job(status, done, total, failed=0, result=None, error=None):
    return {
        "id": "J",
        "status": status,
        "progress": {"done": done, "total": total, "failed": failed},
        "result": result,
        "error": error,
    }


def test_rate_and_eta():
    meter = RateMeter()
    assert meter.update(1_000, 10.0) is None
    rate = meter.update(51_000, 12.0)
    assert rate == 25_000
    line = progress_line(_job("running", 51_000, 101_000, failed=3), rate)
    assert "50.5%" in line
    assert "51,000/101,000 rows" in line
    assert "25,000 rows/s" in line
    assert "ETA 0:02" in line
    assert "3 rejected" in line


def test_summary_points_at_the_rejected_rows():
    result = {
        "rows_total": 10,
        "inserted": 7,
        "updated": 1,
        "unchanged": 0,
        "rejected": 2,
        "dry_run": False,
    }
    text = summary(_job("succeeded", 10, 10, result=result), "http://api")
    assert "10 total, 7 inserted, 1 updated (0 unchanged), 2 rejected" in text
    assert "http://api/v1/jobs/J/errors?format=csv" in text
    failed = summary(_job("failed", 0, None, error={"code": "not_csv", "message": "binary"}), "u")
    assert "Error not_csv: binary" in failed
