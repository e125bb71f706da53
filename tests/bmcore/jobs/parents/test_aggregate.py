"""The ranked sweep table (bmcore.jobs.parents.aggregate), from plain child records."""

from __future__ import annotations

from bmcore.jobs.parents.aggregate import rank_children, ranking_markdown


def test_ranking_puts_the_best_validation_lesion_dice_first_and_failures_last():
    def record(job_id, status, dice=None, loss=None, error=None):
        metrics = {"val_lesion_dice": dice, "val_loss": loss} if status == "succeeded" else {}
        return {"job_id": job_id, "status": status, "params": {"lr": 1}, "metrics": metrics, "error": error}

    rows = rank_children(
        [
            record("a", "succeeded", 0.4, 0.9),
            record("b", "failed", error="ValueError: boom"),
            record("c", "succeeded", 0.6, 1.2),
            record("d", "succeeded", 0.4, 0.5),
            record("e", "succeeded", None, 0.1),
            record("f", "cancelled"),
        ]
    )
    assert [(r["job_id"], r["rank"]) for r in rows] == [
        ("c", 1),
        ("d", 2),
        ("a", 3),
        ("e", 4),
        ("b", None),
        ("f", None),
    ]
    assert rows[4]["error"] == "ValueError: boom" and rows[0]["reused"] is False
    table = ranking_markdown(rows)
    assert table.count("\n| ") == 6 and "ValueError: boom" in table
