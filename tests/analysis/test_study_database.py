"""`hprune analyze` straight from a real study database (SQLite), filled through the real app."""

from __future__ import annotations

import numpy as np
import pandas as pd
from click.testing import CliRunner

from hprune.cli import main
from tests.study.conftest import Participant, import_spec, make_stimuli, run_through


def test_analyze_reads_the_study_database(tmp_path) -> None:
    from study.app import create_app
    from study.db import upgrade

    url = f"sqlite:///{tmp_path / 'study.sqlite3'}"
    upgrade(url)
    app = create_app(
        {"TESTING": True, "DATABASE_URL": url, "MEDIA_DIR": str(tmp_path / "media"),
         "SECRET_KEY": "test-secret"}
    )  # fmt: skip
    try:
        stimuli = make_stimuli(tmp_path / "stimuli")
        study = import_spec(app, stimuli, trials_per_criterion=12)
        rng = np.random.default_rng(0)
        for i in range(6):
            p = Participant(app.test_client(), study.key)
            run_through(p, p.start(pid=f"PIDdb{i}"), rng=rng)
    finally:
        app.extensions["hprune_db"].dispose()
    out = tmp_path / "report"
    # The app assigns trials with its own randomness and the answers are coin flips, so a
    # variant may by chance win every comparison: an explicit prior keeps scores finite.
    result = CliRunner().invoke(
        main,
        ["analyze", "--responses", url, "--study", study.name, "--stimuli", str(stimuli),
         "--reference", "original", "--out", str(out), "--rounds", "30", "--no-mixed-models",
         "--prior", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    from study.export import export_responses

    export = export_responses(url, study=study.name)
    summary = pd.read_csv(out / "tables/summary.csv").set_index("item")["value"]
    assert summary["participants"] == "6"
    assert int(summary["pair trials"]) == (export["kind"] == "pair").sum() > 0
    assert int(summary["attention trials"]) == (export["kind"] == "attention").sum()
    # Random answers fail some gold checks: QC must exclude exactly those the study marked.
    qc = pd.read_csv(out / "tables/qc_participants.csv").set_index("participant")
    failed = set(export.loc[~export["passed_checks"].astype(bool), "participant"])
    flagged = set(qc.index[qc["reasons"].fillna("").str.contains("attention")])
    assert flagged == failed
    inputs = pd.read_csv(out / "tables/inputs.csv")
    assert inputs.loc[0, "location"] == url
