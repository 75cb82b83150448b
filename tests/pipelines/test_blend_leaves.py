"""blend on leaves runs: two tiny real runs on the same folds, the cross-fitted CV, and the refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.__main__ import main
from pipelines.competitions.leaves.leafgen import generate_leaves
from pipelines.core import blending, metrics

TINY = ["--model", "test_efficientnet", "--no-pretrained", "--epochs", "1", "--batch-size", "8", "--folds", "2",
        "--no-progress", "--img-size", "32", "--tta", "1"]


@pytest.fixture(scope="module")
def two_leaves_runs(tmp_path_factory) -> tuple[Path, list[Path]]:
    """Two one-epoch leaves runs on the same data, folds and seed, different learning rates; their records."""
    root = tmp_path_factory.mktemp("leaves-blend")
    data = generate_leaves(root / "data", n_species=3, n_train=24, n_test=6, size=32, seed=1)
    records = []
    out = root / "subs"  # one folder: two runs finishing in the same second get distinct stems (-2)
    for lr in ("1e-3", "3e-3"):
        assert main(["leaves", "--data-dir", str(data), "--out-dir", str(out), "--runs-dir", str(root / "runs"),
                     "--lr", lr, *TINY]) == 0
        (record,) = set((out / "classify-leaves").glob("*.json")) - set(records)
        records.append(record)
    return root, records


def _probs(path: Path, classes: list[str]) -> np.ndarray:
    return pd.read_csv(path)[[f"p_{c}" for c in classes]].to_numpy(float)


def test_blend_of_two_leaves_runs_writes_a_submission_and_an_honest_record(two_leaves_runs, capsys):
    root, records = two_leaves_runs
    probs_file = records[1].with_name(records[1].stem + "_test_probs.csv")  # any of a run's files names it
    assert main(["blend", str(records[0]), str(probs_file), "--out-dir", str(root / "subs")]) == 0
    printed = capsys.readouterr().out
    assert "blend (cross-fitted)" in printed and "log-loss" in printed
    sub_path = Path(printed.strip().splitlines()[-1].removeprefix("submission: "))
    record = json.loads(sub_path.with_suffix(".json").read_text())
    inputs = [json.loads(r.read_text()) for r in records]
    classes = inputs[0]["classes"]
    assert record["competition"] == "classify-leaves" and record["preset"] == "blend"
    weights = np.array([record["blend_weights"][r.stem] for r in records])
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1)
    # every input rescored on its own OOF probabilities: accuracy as its run recorded it, and a log-loss
    for info, rec in zip(record["inputs"], inputs, strict=True):
        assert info["cv_mean"] == pytest.approx(rec["cv_mean"]) and info["log_loss"] > 0
    # the blended submission is the argmax of the blended test probabilities, for every test image
    test_probs = [_probs(r.parent / json.loads(r.read_text())["files"]["tables"]["test_probs"], classes)
                  for r in records]
    blended = np.tensordot(np.stack(test_probs, 1), weights, axes=([1], [0]))
    sub = pd.read_csv(sub_path)
    assert sub["image"].tolist() == pd.read_csv(root / "data" / "test.csv")["image"].tolist()
    assert sub["label"].tolist() == [classes[i] for i in blended.argmax(1)]
    written = _probs(sub_path.parent / record["files"]["tables"]["test_probs"], classes)
    assert np.allclose(written, blended)
    # the cross-fitted CV: fold k's weights are refitted here on the other fold's OOF rows only
    oofs = [pd.read_csv(r.parent / json.loads(r.read_text())["files"]["oof"]) for r in records]
    folds, y = oofs[0]["fold"].to_numpy(), np.searchsorted(classes, oofs[0]["label"].to_numpy())
    p = np.stack([o[[f"p_{c}" for c in classes]].to_numpy(float) for o in oofs], 1)
    for k in (0, 1):
        w = blending.fit_simplex_weights(p[folds != k], y[folds != k], metrics.log_loss)
        assert [record["fold_weights"][str(k)][r.stem] for r in records] == pytest.approx(w, abs=1e-6)
        fold_p = np.tensordot(p[folds == k], w, axes=([1], [0]))
        assert record["log_loss"]["fold_scores"][k] == pytest.approx(metrics.log_loss(y[folds == k], fold_p), abs=1e-6)
        assert record["fold_scores"][k] == pytest.approx(np.mean(fold_p.argmax(1) == y[folds == k]))
    # the mode is named, and equal weights' CV on the same folds is printed and recorded beside the fit's
    assert record["config"]["weights"] == "fit" and record["cv_rule"].startswith("cross-fitted")
    assert "weights: fit on out-of-fold log-loss" in printed and "equal weights (1/n)" in printed
    mean = p.mean(1)
    assert record["equal_weights"]["fold_scores"] == pytest.approx(
        [np.mean(mean[folds == k].argmax(1) == y[folds == k]) for k in (0, 1)])
    assert record["equal_weights"]["fold_log_loss"] == pytest.approx(
        [metrics.log_loss(y[folds == k], mean[folds == k]) for k in (0, 1)])


def test_equal_weights_blend_is_the_mean_of_the_inputs_and_says_so(two_leaves_runs, capsys):
    """``--weights equal``: nothing fitted; OOF and test probabilities are the inputs' plain mean."""
    root, records = two_leaves_runs
    assert main(["blend", str(records[0]), str(records[1]), "--weights", "equal",
                 "--out-dir", str(root / "subs")]) == 0
    printed = capsys.readouterr().out
    assert "weights: equal (1/n), nothing fitted" in printed and "blend (equal weights)" in printed
    assert "equal weights (1/n)" not in printed  # the comparison line is for --weights fit only
    sub_path = Path(printed.strip().splitlines()[-1].removeprefix("submission: "))
    record = json.loads(sub_path.with_suffix(".json").read_text())
    assert record["config"]["weights"] == "equal" and "weights_fitted_on" not in record["config"]
    assert record["cv_rule"].startswith("equal weights") and "equal_weights" not in record
    assert list(record["blend_weights"].values()) == [0.5, 0.5]
    assert all(list(w.values()) == [0.5, 0.5] for w in record["fold_weights"].values())
    classes = record["classes"]
    inputs = [json.loads(r.read_text()) for r in records]
    oof_in = [_probs(r.parent / rec["files"]["oof"], classes) for r, rec in zip(records, inputs, strict=True)]
    test_in = [_probs(r.parent / rec["files"]["tables"]["test_probs"], classes)
               for r, rec in zip(records, inputs, strict=True)]
    oof = pd.read_csv(sub_path.parent / record["files"]["oof"])
    assert np.array_equal(oof[[f"p_{c}" for c in classes]].to_numpy(float), np.mean(oof_in, axis=0))
    assert np.array_equal(_probs(sub_path.parent / record["files"]["tables"]["test_probs"], classes),
                          np.mean(test_in, axis=0))
    assert pd.read_csv(sub_path)["label"].tolist() == [classes[i] for i in np.mean(test_in, axis=0).argmax(1)]
    folds, y = oof["fold"].to_numpy(), np.searchsorted(classes, oof["label"].to_numpy())
    assert record["fold_scores"] == pytest.approx(
        [np.mean(np.mean(oof_in, axis=0)[folds == k].argmax(1) == y[folds == k]) for k in (0, 1)])


def test_a_bad_weights_mode_is_one_line_error(two_leaves_runs, tmp_path, capsys):
    root, records = two_leaves_runs
    assert main(["blend", str(records[0]), str(records[1]), "--weights", "mean", "--out-dir",
                 str(tmp_path / "subs")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and "--weights: invalid choice: 'mean'" in errors[0]
    assert not (tmp_path / "subs").exists()


def test_cross_fitted_weights_never_see_the_fold_they_score():
    """Change everything about fold 0's rows: the weights that score fold 0 stay the same, the others move."""
    rng = np.random.default_rng(0)
    n, k = 300, 4
    y = rng.integers(0, k, n)
    folds = np.arange(n) % 3
    good = np.eye(k)[y] * 2 + rng.random((n, k))
    preds = np.stack([good / good.sum(1, keepdims=True), rng.dirichlet(np.ones(k), n)], 1)
    _, before = blending.cross_fitted_blend(preds, y, folds, metrics.log_loss)
    changed_y, changed = y.copy(), preds.copy()
    changed_y[folds == 0] = rng.integers(0, k, (folds == 0).sum())
    changed[folds == 0] = changed[folds == 0][:, ::-1]  # the models swap places on fold 0
    _, after = blending.cross_fitted_blend(changed, changed_y, folds, metrics.log_loss)
    assert after[0] == pytest.approx(before[0], abs=1e-9)
    assert not np.allclose(after[1], before[1], atol=1e-3) and not np.allclose(after[2], before[2], atol=1e-3)
    assert all(w.min() >= 0 and w.sum() == pytest.approx(1) for w in before.values())


def _copy_run(record: Path, dest: Path) -> Path:
    """A copy of a run's record and files in ``dest`` (another folder, so the stems may repeat)."""
    dest.mkdir(parents=True)
    rec = json.loads(record.read_text())
    files = [rec["files"]["submission"], rec["files"]["oof"], *rec["files"]["tables"].values()]
    for name in [record.name, *files]:
        shutil.copy(record.parent / name, dest / name)
    return dest / record.name


def _edit_record(path: Path, edit) -> None:
    rec = json.loads(path.read_text())
    edit(rec)
    path.write_text(json.dumps(rec))


def _edit_table(path: Path, name: str, edit) -> None:
    rec = json.loads(path.read_text())
    file = path.parent / (rec["files"]["oof"] if name == "oof" else rec["files"]["tables"][name])
    frame = pd.read_csv(file)
    edit(frame)
    frame.to_csv(file, index=False)


def _other_folds(path: Path) -> None:
    _edit_record(path, lambda r: r["folds"].update(ids=[1 - f for f in r["folds"]["ids"]]))


def _other_classes(path: Path) -> None:
    _edit_record(path, lambda r: r.update(classes=[*r["classes"][:-1], "zzz"]))


def _other_training_ids(path: Path) -> None:
    _edit_table(path, "oof", lambda f: f.__setitem__("image", f["image"].str.replace("images/", "images/x")))


def _other_test_ids(path: Path) -> None:
    _edit_table(path, "test_probs", lambda f: f.__setitem__("image", f["image"][::-1].to_numpy()))


def _one_fold(path: Path) -> None:
    _edit_record(path, lambda r: r.update(trained_folds=[0]))


def _no_test_probs(path: Path) -> None:
    _edit_record(path, lambda r: r["files"].pop("tables"))


@pytest.mark.parametrize(("breaker", "message"), [
    (_other_folds, "error: fold ids differ"),
    (_other_classes, "error: class lists differ"),
    (_other_training_ids, "error: training ids differ"),
    (_other_test_ids, "error: test ids differ"),
    (_one_fold, "trained only folds [0]"),
    (_no_test_probs, "test probabilities (runs made before"),
])
def test_mismatched_leaves_runs_are_refused_with_one_line(two_leaves_runs, tmp_path, capsys, breaker, message):
    root, records = two_leaves_runs
    copy = _copy_run(records[1], tmp_path / "classify-leaves")
    breaker(copy)
    assert main(["blend", str(records[0]), str(copy), "--out-dir", str(tmp_path / "subs")]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1
    assert not (tmp_path / "subs").exists()  # nothing written
