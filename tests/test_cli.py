"""The command line, end to end on the fast arm experiment (and one tiny Brax run, `-m slow`)."""

import json
import os

import numpy as np
import pytest

from synprune_jax import checkpoint
from synprune_jax.cli import main
from synprune_jax.runner import read_metrics

ARM = ["me-arm", "--set", "map_elites.batch_size=64", "--set", "map_elites.initial_batch_size=64",
       "--set", "run.chunk_size=5", "--set", "run.checkpoint_every=10"]


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "me-prune" in out and "(default)" in out and "me-arm" in out


def test_run_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *ARM, "--set", "run.num_generations=20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| density <= |" in printed
    for name in ("config.json", "metrics.csv", "timing.json", "summary.json", "summary.md",
                 "archive_heatmap.png", "curves.png", "fitness_vs_density.png"):
        assert (out / name).stat().st_size > 0, name
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["num_generations"] == 20 and config["experiment"] == "me-arm"
    assert config["archive"]["lower"] == [0.0, 0.0]  # resolved from the task
    metrics = read_metrics(out)
    np.testing.assert_array_equal(metrics["generation"], np.arange(1, 21))
    assert checkpoint.latest_step(os.path.join(out, "checkpoints")) == 20
    summary = json.loads((out / "summary.json").read_text())
    assert [row["max_density"] for row in summary["best_by_density"]] == [0.1, 0.25, 0.5, 1.0]
    # refuses to overwrite; plot redraws from the checkpoint
    assert main(["run", *ARM, "--out", str(out)]) == 2
    os.remove(out / "curves.png")
    assert main(["plot", str(out)]) == 0
    assert (out / "curves.png").exists()


def test_resume_matches_uninterrupted_run(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", *ARM, "--set", "run.num_generations=30", "--out", str(full)]) == 0
    # "killed" after 20 generations: a run of 20, then its config asks for 30 and it resumes
    assert main(["run", *ARM, "--set", "run.num_generations=20", "--out", str(cut)]) == 0
    config = json.loads((cut / "config.json").read_text())
    config["run"]["num_generations"] = 30
    (cut / "config.json").write_text(json.dumps(config))
    assert main(["resume", str(cut)]) == 0
    assert (full / "metrics.csv").read_text() == (cut / "metrics.csv").read_text()
    assert json.loads((full / "summary.json").read_text()) == json.loads(
        (cut / "summary.json").read_text())


def test_cvt_archive_and_jsonl_metrics(tmp_path):
    out = tmp_path / "cvt"
    assert main(["run", *ARM, "--set", "archive.kind=cvt", "--set", "archive.num_cells=50",
                 "--set", "archive.num_samples=2000", "--set", "run.metrics_format=jsonl",
                 "--set", "run.num_generations=10", "--out", str(out)]) == 0
    metrics = read_metrics(out)
    np.testing.assert_array_equal(metrics["generation"], np.arange(1, 11))
    assert (out / "metrics.jsonl").exists() and (out / "archive_heatmap.png").exists()
    assert 0 < metrics["coverage"][-1] <= 1


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "me-arm", "--set", "run.num_generation=3", "--out",
                 str(tmp_path / "x")]) == 2
    assert "num_generations" in capsys.readouterr().err
    assert main(["run", "not-an-experiment"]) == 2
    assert "valid" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "x").exists()  # nothing written for a config that failed


# The quickstart notebook (default suite) runs the same Brax MAP-Elites end to end; the CLI's
# run path is tested on the arm.
@pytest.mark.slow
def test_tiny_brax_run(tmp_path, capsys):
    out = tmp_path / "brax"
    assert main(["run", "--set", "task.episode_length=10", "--set", "task.hidden_sizes=4",
                 "--set", "map_elites.batch_size=8", "--set", "map_elites.initial_batch_size=8",
                 "--set", "run.num_generations=2", "--set", "run.chunk_size=2",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generations"] == 2 and summary["evaluations"] == 8 + 2 * 8
    assert np.isfinite(summary["max_fitness"])
