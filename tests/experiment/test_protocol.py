"""The learning-curve protocol: splits, resume, failures, shards and the summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segfew.data import Case
from segfew.errors import DataError, SpecError
from segfew.experiment.protocol import (
    Task,
    parse_shard,
    plan_tasks,
    run_experiment,
    shard_tasks,
    split_for,
)
from segfew.experiment.results import collect_results, summarise, task_status
from segfew.experiment.verdict import experiment_verdict
from segfew.metrics import classification_metrics
from segfew.spec import DataSource, ExperimentSpec

CLASSES = ["dcm", "hcm", "nor"]


def make_cases(patients_per_class: int = 7) -> list[Case]:
    """Patients with two cases each (ED and ES frames): the group is the patient."""
    cases = []
    for c in CLASSES:
        for p in range(patients_per_class):
            for frame in ("ed", "es"):
                pid = f"{c}{p:02d}"
                cases.append(Case(id=f"{pid}_{frame}", images=(Path(f"{pid}_{frame}.nii.gz"),),
                                  target=c, group=pid))
    return cases


def make_spec(**kw: Any) -> ExperimentSpec:
    values: dict[str, Any] = {"data": DataSource(images=Path("images")), "sizes": [1, 2, 4],
                              "repetitions": 2, "frameworks": ["manual", "scratch"],
                              "features": Path("seg.pt"), "seed": 7}
    values.update(kw)
    return ExperimentSpec(**values)


def fake_trainer(task: Task, train: list[Case], test: list[Case], work: Path) -> dict[str, Any]:
    """Deterministic: more training patients → more test cases right; scratch is worse."""
    assert work.is_dir()
    hits = task.size * (2 if task.framework == "manual" else 1)
    y_true = [CLASSES.index(str(c.target)) for c in test]
    y_pred = [t if (i % 8) < hits else (t + 1) % 3 for i, t in enumerate(y_true)]
    metrics = classification_metrics(y_true, y_pred, None, CLASSES, bootstrap=0)
    return {"metrics": metrics, "seconds": 0.0,
            "predictions": [{"id": c.id, "predicted": CLASSES[p]}
                            for c, p in zip(test, y_pred, strict=True)]}


class Counting:
    def __init__(self, interrupt_at: int | None = None, fail_key: str | None = None) -> None:
        self.calls: list[str] = []
        self.interrupt_at = interrupt_at
        self.fail_key = fail_key

    def __call__(self, task: Task, train: list[Case], test: list[Case], work: Path
                 ) -> dict[str, Any]:
        self.calls.append(task.key)
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        if task.key == self.fail_key:
            raise ValueError("out of memory, pretend")
        return fake_trainer(task, train, test, work)


def _groups(cases: list[Case]) -> set[str]:
    return {str(c.group) for c in cases}


# ---------------------------------------------------------------- splits


def test_splits_nested_group_aware_and_disjoint() -> None:
    cases, spec = make_cases(), make_spec()
    for rep in (1, 2):
        splits = {k: split_for(cases, spec, k, rep) for k in spec.sizes}
        tests = {frozenset(c.id for c in splits[k][1]) for k in spec.sizes}
        assert len(tests) == 1  # one test set per repetition, whatever the size
        for k, (train, test) in splits.items():
            per_class = {c: len({x.group for x in train if x.target == c}) for c in CLASSES}
            assert per_class == dict.fromkeys(CLASSES, k)
            assert len(train) == 2 * 3 * k  # both frames of every chosen patient
            assert not _groups(train) & _groups(test)
        assert _groups(splits[1][0]) < _groups(splits[2][0]) < _groups(splits[4][0])
        # default test set: everything the largest training set leaves
        assert len(splits[4][1]) == len(cases) - len(splits[4][0])


def test_splits_differ_across_repetitions_and_repeat_exactly() -> None:
    cases, spec = make_cases(), make_spec()
    a = split_for(cases, spec, 2, 1)
    assert a == split_for(cases, spec, 2, 1)
    assert _groups(a[0]) != _groups(split_for(cases, spec, 2, 2)[0])
    assert _groups(a[0]) != _groups(split_for(cases, make_spec(seed=8), 2, 1)[0])


def test_test_per_class_and_fixed_test_set() -> None:
    cases, spec = make_cases(), make_spec(test_per_class=2)
    train, test = split_for(cases, spec, 4, 1)
    assert len(_groups(test)) == 2 * 3 and not _groups(train) & _groups(test)
    assert test == split_for(cases, spec, 1, 1)[1]

    fixed_spec = make_spec(test_table=Path("test.csv"))
    assert fixed_spec.test == "fixed"
    held = [c for c in cases if c.group in ("dcm00", "hcm00", "nor00")]
    for rep in (1, 2):
        train, test = split_for(cases, fixed_spec, 4, rep, held)
        assert test == held and not _groups(train) & _groups(held)


def test_a_fixed_test_sets_patients_are_kept_out_of_training_and_said(tmp_path: Path) -> None:
    """Rows of the fixed test set also in the training table were kept out of training
    without a word; so were a test folder's cases under training ids, and the lack of
    patients that followed was said as "some classes have fewer" alone."""
    from dataclasses import replace

    from segfew.errors import DataWarning

    cases = make_cases(patients_per_class=3)
    held = [c for c in cases if c.group in ("dcm00", "hcm00")]
    other = [replace(c, images=(Path("test") / c.images[0].name,)) for c in cases
             if c.group == "nor00"]  # another folder's scans under the same ids
    spec = make_spec(sizes=[1], repetitions=1, test_table=Path("test.csv"))
    with pytest.warns(DataWarning) as caught:
        run_experiment(spec, tmp_path / "a", fake_trainer, cases=cases,
                       test_cases=[*held, *other])
    said = " ".join(str(w.message) for w in caught)
    assert ("6 of the 18 training cases are patients of the fixed test set (dcm00_ed, "
            "dcm00_es, hcm00_ed, hcm00_es, nor00_ed, …): kept out of every training set, "
            "which draws from the other 12; 2 of them are other images") in said, said
    with pytest.raises(DataError, match=r"fewer \(dcm: 2, hcm: 2; the fixed test "
                                        r"set's patients are not counted\)"):
        run_experiment(spec.model_copy(update={"sizes": [3]}), tmp_path / "b", fake_trainer,
                       cases=cases, test_cases=held)
    emptied = [c for c in cases if c.group.startswith("dcm")]  # every dcm patient tested
    with pytest.raises(DataError, match=r"fewer \(dcm: 0; the fixed test set's patients"):
        run_experiment(spec, tmp_path / "c", fake_trainer, cases=cases, test_cases=emptied)
    assert not (tmp_path / "c" / "results").exists()


def test_too_few_patients_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lower the sizes"):
        run_experiment(make_spec(sizes=[1, 7]), tmp_path, fake_trainer, cases=make_cases())


# ---------------------------------------------------------------- runs


def _strip(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in results]


def test_identical_split_for_every_framework_in_results(tmp_path: Path) -> None:
    run_experiment(make_spec(), tmp_path, fake_trainer, cases=make_cases())
    by_key = {(r["size"], r["repetition"], r["framework"]): r for r in collect_results(tmp_path)}
    assert len(by_key) == 3 * 2 * 2
    for size in (1, 2, 4):
        for rep in (1, 2):
            m, s = by_key[(size, rep, "manual")], by_key[(size, rep, "scratch")]
            assert m["train_ids"] == s["train_ids"] and m["test_ids"] == s["test_ids"]
            assert m["n_train"] == 6 * size
    saved = json.loads((tmp_path / "spec.json").read_text())
    assert saved["sizes"] == [1, 2, 4]
    assert (tmp_path / "run.json").is_file()
    data = json.loads((tmp_path / "data.json").read_text())
    assert data["patients_per_class"] == dict.fromkeys(CLASSES, 7)



def test_identical_scans_under_two_ids_never_straddle_a_split(tmp_path: Path) -> None:
    """The public ACDC copy holds one scan under two patients (074 and 076): a random split
    put one in training and the other in the test set, a leak the ids cannot show."""
    from segfew.data import group_identical_images

    cases = []
    for c in make_cases(patients_per_class=6):
        path = tmp_path / c.images[0].name
        path.write_bytes(c.id.encode())  # every scan its own bytes ...
        cases.append(Case(id=c.id, images=(path,), target=c.target, group=c.group))
    copy = next(c for c in cases if c.group == "hcm03")
    for c in cases:
        if c.group == "hcm01":  # ... but patient hcm01's scans are copies of hcm03's
            c.images[0].write_bytes(copy.images[0].read_bytes())
    grouped, joined = group_identical_images(cases)
    assert joined == [["hcm01", "hcm03"]]
    assert [c.group for c in grouped if c.group not in ("hcm01", "hcm03")] == [
        c.group for c in cases if c.group not in ("hcm01", "hcm03")]  # the others unchanged
    spec = make_spec(sizes=[1, 2, 4], repetitions=6)
    for rep in range(1, 7):
        train, test = split_for(grouped, spec, 4, rep)
        sides = {c.id.split("_")[0]: "train" for c in train} | {
            c.id.split("_")[0]: "test" for c in test}
        assert sides.get("hcm01", "out") == sides.get("hcm03", "out")
    straddled = 0
    for rep in range(1, 7):  # what the ids alone gave
        train, test = split_for(cases, spec, 4, rep)
        sides = {c.id.split("_")[0]: "train" for c in train} | {
            c.id.split("_")[0]: "test" for c in test}
        straddled += sides.get("hcm01", "out") != sides.get("hcm03", "out")
    assert straddled

def test_interrupted_run_resumes_without_redoing_work(tmp_path: Path) -> None:
    cases, spec = make_cases(), make_spec()
    reference = tmp_path / "reference"
    run_experiment(spec, reference, fake_trainer, cases=cases)

    run = tmp_path / "run"
    first = Counting(interrupt_at=5)
    with pytest.raises(KeyboardInterrupt, match="rerun the same command"):  # no --resume
        run_experiment(spec, run, first, cases=cases)
    assert len(collect_results(run)) == 4
    second = Counting()
    run_experiment(spec, run, second, cases=cases)
    assert len(second.calls) == len(plan_tasks(spec)) - 4
    assert not set(second.calls) & set(first.calls[:4])
    assert _strip(collect_results(run)) == _strip(collect_results(reference))
    third = Counting()
    run_experiment(spec, run, third, cases=cases)
    assert third.calls == []


def test_resume_refuses_a_features_file_whose_content_changed(tmp_path: Path) -> None:
    features = tmp_path / "seg.pt"
    features.write_bytes(b"network one")
    cases, spec = make_cases(), make_spec(features=features, sizes=[1], repetitions=1)
    run = tmp_path / "run"
    run_experiment(spec, run, fake_trainer, cases=cases)
    info = json.loads((run / "run.json").read_text())
    assert [d["path"] for d in info["data"]] == [str(features)]  # the manifest lists it
    run_experiment(spec, run, fake_trainer, cases=cases)  # the same file: resumes
    features.write_bytes(b"network two")  # retrained under the same name
    with pytest.raises(SpecError, match=r"the model file .*seg\.pt has changed since this "
                                        r"RUN_DIR was started"):
        run_experiment(spec, run, fake_trainer, cases=cases)


def test_resume_refuses_a_table_or_scan_whose_content_changed(tmp_path: Path) -> None:
    """Classes corrected in the table (or a scan replaced) between shards or a resume: the
    finished tasks' results, from the old data, would be pooled with the new tasks'."""
    table = tmp_path / "labels.csv"
    table.write_text("id,class\nx,dcm\n")
    cases = _cases_on_disk(tmp_path / "images")
    spec = make_spec(data=DataSource(images=tmp_path / "images", table=table), sizes=[1],
                     repetitions=1, features=None, frameworks=["scratch"])
    run = tmp_path / "run"
    run_experiment(spec, run, fake_trainer, cases=cases, shard=(1, 2))
    run_experiment(spec, run, fake_trainer, cases=cases, shard=(1, 2))  # unchanged: resumes
    table.write_text("id,class\nx,hcm\n")  # a class corrected
    with pytest.raises(DataError, match=r"this RUN_DIR's 1 finished task\(s\) ran on other "
                                        r"data \(1 input\(s\) new, 1 gone: .*labels\.csv "
                                        r"changed; inputs are compared by their bytes"):
        run_experiment(spec, run, fake_trainer, cases=cases, shard=(2, 2))
    table.write_text("id,class\nx,dcm\n")
    cases[0].images[0].write_bytes(b"another scan under the same name")
    with pytest.raises(DataError, match=r"dcm00_ed\.nii\.gz changed"):
        run_experiment(spec, run, fake_trainer, cases=cases)


def test_resume_refuses_a_scan_added_or_gone(tmp_path: Path) -> None:
    """A scan added to a class folder between shards (no table to change) was taken without
    a word: the next repetitions drew their splits from other cases than the finished ones'.
    A resumed training and an experiment now compare their manifests alike, by digest, each
    as often as it occurs (a byte copy added is an input added)."""
    cases = _cases_on_disk(tmp_path / "images")
    spec = make_spec(data=DataSource(images=tmp_path / "images"), sizes=[1], repetitions=1,
                     features=None, frameworks=["scratch"])
    run = tmp_path / "run"
    run_experiment(spec, run, fake_trainer, cases=cases, shard=(1, 2))
    added = cases[0].images[0].with_name("late.nii.gz")
    added.write_bytes(b"a scan added later")
    more = [*cases, Case(id="late", images=(added,), target="dcm", group="late")]
    with pytest.raises(DataError, match=r"ran on other data \(1 input\(s\) new, 0 gone: "
                                        r".*late\.nii\.gz is new"):
        run_experiment(spec, run, fake_trainer, cases=more, shard=(2, 2))
    with pytest.raises(DataError, match=r"\(0 input\(s\) new, 1 gone: .*dcm00_ed\.nii\.gz "
                                        r"is gone"):
        run_experiment(spec, run, fake_trainer, cases=cases[1:], shard=(2, 2))
    copy = added.with_name("copy.nii.gz")  # a byte copy of a scan there: another input too
    copy.write_bytes(cases[0].images[0].read_bytes())
    twin = [*cases, Case(id="copy", images=(copy,), target="dcm", group="copy")]
    with pytest.raises(DataError, match=r"\(1 input\(s\) new, 0 gone: .*copy\.nii\.gz is new"):
        run_experiment(spec, run, fake_trainer, cases=twin, shard=(2, 2))
    run_experiment(spec, run, fake_trainer, cases=cases, shard=(2, 2))  # as it was: goes on
    run_experiment(spec, run, fake_trainer, cases=cases, shard=(1, 2))  # both shards' records


def test_resume_refuses_a_measured_label_map_whose_content_changed(tmp_path: Path) -> None:
    """With --masks the label maps are what measures measures: one edited between shards
    would pool results of two sets of masks."""
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "dcm00_ed_seg.nii.gz").write_bytes(b"a mask")
    cases = _cases_on_disk(tmp_path / "images")
    spec = make_spec(data=DataSource(images=tmp_path / "images"), sizes=[1], repetitions=1,
                     features=None, frameworks=["measures"], masks=masks)
    run = tmp_path / "run"
    run_experiment(spec, run, fake_trainer, cases=cases, shard=(1, 2))
    assert any(d["path"] == str(masks / "dcm00_ed_seg.nii.gz")
               for d in json.loads((run / "run-shard1of2.json").read_text())["data"])
    (masks / "dcm00_ed_seg.nii.gz").write_bytes(b"the mask with half its tumour erased")
    with pytest.raises(DataError, match=r"dcm00_ed_seg\.nii\.gz changed"):
        run_experiment(spec, run, fake_trainer, cases=cases, shard=(2, 2))


def test_resume_refuses_a_label_map_changed_in_a_sub_folder_of_masks(tmp_path: Path) -> None:
    """The images' own tree given as --masks: their maps lie in sub-folders, which the run's
    manifest did not list (only the folder's top), so an edited map was not noticed."""
    cases = _cases_on_disk(tmp_path / "data" / "site1")
    for c in cases:
        c.images[0].with_name(f"{c.id}_seg.nii.gz").write_bytes(f"mask {c.id}".encode())
    spec = make_spec(data=DataSource(images=tmp_path / "data"), sizes=[1], repetitions=1,
                     features=None, frameworks=["measures"], masks=tmp_path / "data")
    run = tmp_path / "run"
    run_experiment(spec, run, fake_trainer, cases=cases, shard=(1, 2))
    edited = tmp_path / "data" / "site1" / "dcm03_es_seg.nii.gz"
    assert str(edited) in [d["path"] for d in json.loads(
        (run / "run-shard1of2.json").read_text())["data"]]
    edited.write_bytes(b"the mask redrawn")
    with pytest.raises(DataError, match=r"dcm03_es_seg\.nii\.gz changed"):
        run_experiment(spec, run, fake_trainer, cases=cases, shard=(2, 2))


def test_failed_task_is_recorded_and_retried(tmp_path: Path) -> None:
    cases, spec = make_cases(), make_spec()
    bad = "size002_rep01_scratch"
    trainer = Counting(fail_key=bad)
    run_experiment(spec, tmp_path, trainer, cases=cases)
    assert len(trainer.calls) == len(plan_tasks(spec))  # the run went on
    error = json.loads((tmp_path / "results" / f"{bad}.error.json").read_text())
    assert "out of memory" in error["error"] and "Traceback" in error["traceback"]
    status = task_status(tmp_path)
    assert list(status.failed) == [bad] and not status.missing
    assert len(status.finished) == len(plan_tasks(spec)) - 1

    retry = Counting()
    run_experiment(spec, tmp_path, retry, cases=cases)
    assert retry.calls == [bad]
    assert not (tmp_path / "results" / f"{bad}.error.json").exists()
    assert not task_status(tmp_path).failed


def test_other_spec_in_same_run_dir_is_refused(tmp_path: Path) -> None:
    cases = make_cases()
    run_experiment(make_spec(), tmp_path, fake_trainer, cases=cases)
    with pytest.raises(SpecError, match="new RUN_DIR") as e:
        run_experiment(make_spec(repetitions=3), tmp_path, fake_trainer, cases=cases)
    assert "differs in: repetitions 2 → 3)" in str(e.value) and "paths" not in str(e.value)
    moved = make_spec(data=DataSource(images=Path("elsewhere/images")))  # a folder moved:
    with pytest.raises(SpecError, match=r"data\.images 'images' → 'elsewhere/images'.*its "
                                        r"inputs' paths are among its settings"):  # said so
        run_experiment(moved, tmp_path, fake_trainer, cases=cases)
    # a setting that cannot change results (progress bars) may differ
    quiet = make_spec()
    quiet.train.progress = False
    run_experiment(quiet, tmp_path, Counting(), cases=cases)


def test_a_framework_added_later_trains_only_its_tasks(tmp_path: Path) -> None:
    cases = make_cases()
    run_experiment(make_spec(frameworks=["manual"]), tmp_path, fake_trainer, cases=cases)
    later = Counting()
    run_experiment(make_spec(), tmp_path, later, cases=cases)
    assert later.calls and all(key.endswith("_scratch") for key in later.calls)
    assert len(later.calls) == 3 * 2
    by_key = {(r["size"], r["repetition"], r["framework"]): r for r in collect_results(tmp_path)}
    for size in (1, 2, 4):  # the added framework got the very same splits
        m, s = by_key[(size, 1, "manual")], by_key[(size, 1, "scratch")]
        assert m["train_ids"] == s["train_ids"] and m["test_ids"] == s["test_ids"]


def test_two_shards_merged_equal_unsharded_run(tmp_path: Path) -> None:
    cases, spec = make_cases(), make_spec()
    run_experiment(spec, tmp_path / "all", fake_trainer, cases=cases)
    one, two = Counting(), Counting()
    run_experiment(spec, tmp_path / "s1", one, shard=(1, 2), cases=cases)
    run_experiment(spec, tmp_path / "s2", two, shard=(2, 2), cases=cases)
    assert not set(one.calls) & set(two.calls)
    assert len(one.calls) + len(two.calls) == len(plan_tasks(spec))
    expected = summarise(collect_results(tmp_path / "all"))
    assert summarise(collect_results([tmp_path / "s1", tmp_path / "s2"])) == expected
    # shards may also share one RUN_DIR
    run_experiment(spec, tmp_path / "shared", fake_trainer, shard=(2, 2), cases=cases)
    run_experiment(spec, tmp_path / "shared", fake_trainer, shard=(1, 2), cases=cases)
    assert summarise(collect_results(tmp_path / "shared")) == expected
    assert len(task_status([tmp_path / "s1", tmp_path / "s2"]).finished) == 12


def test_shards_of_different_specs_do_not_merge(tmp_path: Path) -> None:
    cases = make_cases()
    run_experiment(make_spec(), tmp_path / "a", fake_trainer, shard=(1, 2), cases=cases)
    run_experiment(make_spec(seed=1), tmp_path / "b", fake_trainer, shard=(2, 2), cases=cases)
    with pytest.raises(SpecError, match="different settings"):
        collect_results([tmp_path / "a", tmp_path / "b"])


def test_shard_parsing_and_round_robin() -> None:
    tasks = plan_tasks(make_spec())
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for text in ("0/2", "3/2", "a/b", "1"):
        with pytest.raises(SpecError):
            parse_shard(text)
    parts = [shard_tasks(tasks, (i, 3)) for i in (1, 2, 3)]
    assert sorted(t for p in parts for t in p) == sorted(tasks)
    assert parts[0][:2] == [tasks[0], tasks[3]]
    assert tasks[0].key == "size001_rep01_manual"


def test_summary_mean_and_std() -> None:
    def result(fw: str, size: int, rep: int, acc: float) -> dict[str, Any]:
        return {"framework": fw, "size": size, "repetition": rep,
                "metrics": {"accuracy": acc, "kappa": None, "macro_f1": acc,
                            "balanced_accuracy": acc,
                            "per_class": {"a": {"f1": acc}, "b": {"f1": 1 - acc}}}}
    rows = summarise([result("scratch", 2, 1, 0.4), result("manual", 2, 1, 0.5),
                      result("manual", 2, 2, 0.7), result("manual", 1, 1, 0.3)])
    assert [(r["framework"], r["size"]) for r in rows] == [("manual", 1), ("manual", 2),
                                                           ("scratch", 2)]
    m2 = rows[1]
    assert m2["accuracy"]["mean"] == pytest.approx(0.6)
    assert m2["accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert m2["kappa"] == {"mean": None, "std": None, "n": 0}
    assert m2["f1"]["b"]["mean"] == pytest.approx(0.4)
    assert rows[0]["accuracy"]["std"] is None  # one repetition: no spread


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="ascending"):
        make_spec(sizes=[4, 2])
    with pytest.raises(ValueError, match="ascending"):
        make_spec(sizes=[2, 2])
    with pytest.raises(ValueError, match="positive"):
        make_spec(sizes=[0, 2])
    with pytest.raises(ValueError, match="at least one framework"):
        make_spec(frameworks=[])
    with pytest.raises(ValueError, match="features"):
        make_spec(features=None)
    with pytest.raises(ValueError, match="threshold_features"):
        make_spec(frameworks=["threshold"])
    with pytest.raises(ValueError, match="vgg_weights"):
        make_spec(frameworks=["vgg"])
    with pytest.raises(ValueError, match="test_table"):
        make_spec(test="fixed")


# ---------------------------------------------------------------- leakage (SPEC §6)


def _cases_on_disk(root: Path) -> list[Case]:
    """make_cases() with real (tiny, distinct) image files, so they have SHA-256s."""
    root.mkdir(parents=True, exist_ok=True)
    cases = []
    for i, c in enumerate(make_cases()):
        path = root / c.images[0].name
        path.write_bytes(f"scan {i}".encode())
        cases.append(Case(id=c.id, images=(path,), target=c.target, group=c.group))
    return cases


def _feature_net(path: Path, trained_on: list[Path]) -> Path:
    from segfew.files import file_digest
    from segfew.modelfile import Architecture, ModelMeta, save_model
    from segfew.models import MNet

    meta = ModelMeta(kind="segmentation", preprocess={"size": [32]},
                     architecture=Architecture(name="mnet", args={
                         "dim": 2, "in_channels": 1, "num_labels": 2, "n_s": 2}),
                     classes=["background", "A"],
                     metrics={"training_data": [file_digest(p) for p in trained_on]})
    return save_model(path, MNet(2, 1, 2, n_s=2), meta)


def test_experiment_refuses_a_feature_network_trained_on_one_of_its_test_cases(
        tmp_path: Path) -> None:
    cases = _cases_on_disk(tmp_path / "images")
    spec = make_spec(repetitions=1, sizes=[1, 2], frameworks=["measures", "scratch"])
    train, test = split_for(cases, spec, 2, 1)
    leaked = test[3]
    seg = _feature_net(tmp_path / "seg.pt", [c.images[0] for c in train] + [leaked.images[0]])
    spec = spec.model_copy(update={"features": seg})
    calls = Counting()
    with pytest.raises(DataError) as err:
        run_experiment(spec, tmp_path / "run", calls, cases=cases)
    message = str(err.value)
    assert "\n" not in message and "seg.pt" in message
    assert "1 test case(s)" in message and leaked.id in message
    assert calls.calls == []  # refused before any training
    # the flag turns it into a loud warning, recorded beside the results
    with pytest.warns(UserWarning, match="LEAKAGE"):
        run_experiment(spec.model_copy(update={"allow_leakage": True}), tmp_path / "warned",
                       calls, cases=cases)
    data = json.loads((tmp_path / "warned" / "data.json").read_text())
    assert data["leakage"] == {str(seg): [leaked.id]}
    # a network trained on the training side only passes
    clean = _feature_net(tmp_path / "clean.pt", [c.images[0] for c in train])
    run_experiment(spec.model_copy(update={"features": clean}), tmp_path / "clean", calls,
                   cases=cases)


def test_an_nnunet_folder_shared_by_the_repetitions_is_reported_unchecked(
        tmp_path: Path) -> None:
    """An nnU-Net results folder records no training data segfew can compare: the run says
    the check was not made rather than that no network is shared."""
    cases = _cases_on_disk(tmp_path / "images")
    folder = tmp_path / "Dataset001" / "nnUNetTrainer__nnUNetPlans__2d"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text("{}")  # what tells it from a folder of label maps
    spec = make_spec(repetitions=1, sizes=[1], frameworks=["measures"], features=folder)
    with pytest.warns(UserWarning, match="no record"):
        run_experiment(spec, tmp_path / "run", Counting(), cases=cases)
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    networks = data["leakage_check"]["networks"]
    assert [(n["model"], n["checked"]) for n in networks] == [(str(folder), False)]
    alarm, sentence = experiment_verdict(data, "cases")
    assert alarm and "not made" in sentence and folder.name in sentence


def test_per_repetition_pretraining_sees_only_the_training_side(tmp_path: Path) -> None:
    cases = _cases_on_disk(tmp_path / "images")
    spec = make_spec(repetitions=2, sizes=[1, 2], frameworks=["measures"], features=None,
                     pretrain=Path("pretrain.toml"),
                     data=DataSource(images=tmp_path / "images", labels=tmp_path / "labels"))
    seen: dict[int, list[Case]] = {}

    def pretrain_step(rep: int, side: list[Case], out: Path) -> None:
        seen[rep] = side
        _feature_net(out, [c.images[0] for c in side])

    run_experiment(spec, tmp_path / "run", Counting(), cases=cases, pretrain_step=pretrain_step)
    assert sorted(seen) == [1, 2]
    for rep, side in seen.items():
        test = {c.group for c in split_for(cases, spec, 2, rep)[1]}
        assert test and not test & {c.group for c in side}
        assert len(side) + 2 * len(test) == len(cases)  # everything else trains the network
        assert (tmp_path / "run" / "pretrain" / f"rep{rep:02d}" / "seg.pt").is_file()
    # resuming does not pre-train again
    seen.clear()
    run_experiment(spec, tmp_path / "run", Counting(), cases=cases, pretrain_step=pretrain_step)
    assert seen == {}


def test_allow_leakage_may_change_when_resuming(tmp_path: Path) -> None:
    cases = make_cases()
    run_experiment(make_spec(), tmp_path, Counting(), cases=cases)
    again = Counting()
    run_experiment(make_spec(allow_leakage=True), tmp_path, again, cases=cases)
    assert again.calls == []  # same results: nothing to redo, and no settings error


def test_a_task_failing_on_its_data_is_recorded_in_plain_words(tmp_path: Path) -> None:
    """A problem of the data reads as segfew says it, not as an exception class name."""

    class Refusing(Counting):
        def __call__(self, task: Task, *args: Any, **kwargs: Any) -> Any:
            if task.key == "size002_rep01_scratch":
                raise DataError("binary mask stored as 0/255", "m.png")
            return super().__call__(task, *args, **kwargs)

    cases, spec = make_cases(), make_spec()
    run_experiment(spec, tmp_path, Refusing(), cases=cases)
    error = json.loads((tmp_path / "results" / "size002_rep01_scratch.error.json").read_text())
    assert error["error"] == "m.png: binary mask stored as 0/255"


@pytest.mark.parametrize("content", ["{}", "[]", '{"repetition": 1, "size": 2}'])
def test_a_result_file_not_as_segfew_writes_it_is_named(tmp_path: Path, content: str) -> None:
    cases, spec = make_cases(), make_spec(sizes=[1], repetitions=1)
    run_experiment(spec, tmp_path, Counting(), cases=cases)
    (tmp_path / "results" / "odd.json").write_text(content)
    with pytest.raises(DataError, match=r"odd\.json: result file without .*framework.*"
                                        "remove it and rerun"):
        collect_results(tmp_path)


@pytest.mark.parametrize(("key", "value", "named"), [
    ("accuracy", 0.9, r"its accuracy \(0\.900\)"),
    ("balanced_accuracy", 0.9, r"its balanced accuracy \(0\.900\)"),
    ("kappa", 0.9, r"its kappa \(0\.900\)"),
    ("confusion_matrix", None, r"its confusion matrix \(\[\["),
])
def test_a_result_whose_metrics_are_not_its_predictions_is_named(
        tmp_path: Path, key: str, value: Any, named: str) -> None:
    """An edited result file: its row of the report would disagree with the pooled accuracy
    counted from its predictions (a matrix edited with its accuracy to match, too)."""
    cases, spec = make_cases(), make_spec(sizes=[1], repetitions=1)
    run_experiment(spec, tmp_path, fake_trainer, cases=cases)
    assert collect_results(tmp_path)  # as written: consistent
    path = sorted((tmp_path / "results").glob("*.json"))[0]
    result = json.loads(path.read_text())
    metrics = result["metrics"]
    if key == "confusion_matrix":  # the errors moved onto the diagonal, accuracy to match
        cm = metrics["confusion_matrix"]
        metrics["confusion_matrix"] = [[sum(row) if i == j else 0 for j in range(len(row))]
                                       for i, row in enumerate(cm)]
        metrics["accuracy"] = 1.0
    else:
        metrics[key] = value
    path.write_text(json.dumps(result))
    with pytest.raises(DataError, match=rf"{path.name}: {named}.* is not that of its own "
                                        r"predictions .*: the file was edited or damaged"):
        collect_results(tmp_path)
