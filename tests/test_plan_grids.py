"""`bac.plan.grids`: the enumeration of every training matches what the notebooks train.

Two notebooks (10, Ren: a localiser, Table II with its S1 reuse, Table III with S5 by `fit_final`; 30, Chen:
Phase I and the `run` helper's reuse) are executed under smoke with every training recorded (fastai's
`bac.train.learner`, the localisers' `train_steps`, with no stored localiser reused; 30 is marked `notebooks`:
~2 minutes with a cold image cache, its CAM crops); the other notebooks' grids are checked
structurally against their settings (a grid changed in the config changes the count).
"""
from __future__ import annotations

import json

import pytest

from bac.config import resolve
from bac.plan import grids

NB10 = "10_ren2019_regression_cnn"


def _by(ts, notebook):
    return [t for t in ts if t.notebook == notebook]


def _execute(path, params: dict) -> None:
    """Run a notebook's code cells in this process (the parameters cell replaced by `params`)."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    ns = dict(params, display=lambda *a, **k: None)
    for cell in cells[1:]:   # cells[0] is the papermill parameters cell
        exec(compile("".join(cell["source"]), f"{path.name}", "exec"), ns)


@pytest.mark.parametrize("notebook", [NB10, pytest.param("30_chen2022_attention_ldl", marks=pytest.mark.notebooks)])
def test_a_notebook_trains_what_the_plan_lists(notebook, tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    from fastai.callback.core import Callback
    from bac import data, train
    from bac.models import chen2022
    from bac.env import REPO
    from bac.preprocess import targets
    seen, batches = [], []

    class Count(Callback):
        def before_fit(self):
            batches.append(0)

        def after_batch(self):
            if self.training:
                batches[-1] += 1

    real_learner, real_steps = train.learner, targets.train_steps

    def learner(dls, model, *a, cbs=None, **k):
        x = dls.train.dataset[0][0]
        seen.append(("fit", len(dls.train.dataset), dls.train.bs, int(x.shape[0]), int(x.shape[-1])))
        return real_learner(dls, model, *a, cbs=list(cbs or []) + [Count()], **k)

    def train_steps(model, loss_of_batch, n_items, steps, bs, *a, **k):
        seen.append(("steps", steps, min(bs, n_items)))
        return real_steps(model, loss_of_batch, n_items, steps, bs, *a, **k)

    monkeypatch.setattr(train, "learner", learner)
    monkeypatch.setattr(targets, "train_steps", train_steps)
    monkeypatch.setattr(targets, "model_dir", lambda key: tmp_path / "models" / key)   # nothing cached
    fit_locators, fresh = chen2022.fit_locators, []

    def first_fit_fresh(cfg, df, progress=False, reuse=True):   # Phase I trained, then reused as in a fresh run
        fresh.append(1)
        return fit_locators(cfg, df, progress, reuse=reuse and len(fresh) > 1)
    monkeypatch.setattr(chen2022, "fit_locators", first_fit_fresh)
    root = data.ensure_synthetic(resolve("smoke"), progress=False)
    _execute(REPO / "notebooks" / f"{notebook}.ipynb",
             dict(PROFILE="smoke", DATA_DIR=str(root), SEED=0, SEEDS=1, OUT_DIR=str(tmp_path / "out"),
                  DRY_RUN=False, OVERRIDES="", COMMAND="test"))

    planned = _by(grids.trainings("smoke", data_dir=str(root)), notebook)
    expect = [("steps", int(t.epochs), t.images) if t.changes.get("kind") in ("detector", "unetpp") else
              ("fit", t.images, t.bs, t.chans, t.size) for t in planned]
    assert sorted(seen) == sorted(expect)
    fits = [t for t in planned if t.changes.get("kind") not in ("detector", "unetpp")]
    per_epoch = [max(1, t.images // t.bs) for t in fits]
    assert sorted(batches) == sorted(round(t.epochs * n) for t, n in zip(fits, per_epoch))


def test_split_sizes_follow_the_rules():
    rsna = grids.RSNA
    assert grids.split_sizes("official", rsna) == rsna
    li = grids.split_sizes("li2021", rsna)                      # 7:2:1 of the training set
    assert sum(li.values()) == rsna["train"] and li["validation"] == round(0.2 * rsna["train"])
    chen = grids.split_sizes("chen2022", rsna)                  # 500 + 500 of every labelled image
    assert (chen["validation"], chen["test"]) == (500, 500) and sum(chen.values()) == sum(rsna.values())
    small = grids.split_sizes("chen2022", dict(train=900, validation=60, test=40))
    assert (small["validation"], small["test"]) == (100, 100)   # scaled down below the full pool (5,000)


def test_full_grids_follow_the_settings():
    full = grids.trainings("full")
    n = grids.per_notebook(full)
    ren, chen, liu, zheng = (resolve("full", m) for m in ("ren2019", "chen2022", "liu2024", "zheng2024"))
    # Ren: a detector, every Table II backbone (the one equal to the final backbone is S1), S2..S5
    assert n[NB10] == 1 + len(ren.backbones) + len(ren.configs) - 1
    # Li: the sizes and the three ablations (pretrained, so `no_pretrain` runs)
    assert n["20_li2021_mobilenetv3"] == len(resolve("full", "li2021").sizes) + 3
    # Chen: Phase I (3), Table V, II, III, IV, the lambda and tau sweeps without the settings that already ran
    t5, t2 = len(chen.inputs) * len(chen.losses), len(chen.table2_backbones) * len(chen.table2_pretrained)
    t3 = len(chen.table3_sex) - 1                    # [] = Table II's Xception (pretrained) row
    t4 = len(chen.table4_sizes) - 2                  # 224 = Table III's [32] row, 560 = Table V's O l1
    lam = len(chen.sens_lambda_inputs) * (len(chen.sens_lambdas) - 1)      # lambda = cfg.lam ran in Table V
    tau = len(chen.sens_tau_regions) * (len(chen.sens_taus) - 1)           # tau_hand 20 / tau_r1 50 ran
    assert n["30_chen2022_attention_ldl"] == 3 + t5 + t2 + t3 + t4 + lam + tau
    # Liu: every experiment, one model per sex, one pass per queue granularity
    assert n["40_liu2024_2mnet"] == 2 * len(liu.experiments)
    assert {t.passes for t in _by(full, "40_liu2024_2mnet")} == {1, 2, 3, 4}
    # Zheng: teacher, student, CNN, regression, the grids without the main setting, the sex ablation (2);
    # its UNet++ is notebook 02's (same settings and rows)
    assert n["50_zheng2024_kdaldl"] == (4 + len(zheng.teacher_grid) - 1 + len(zheng.student_grid) - 1
                                        + len(zheng.sigmas) - 1 + len(zheng.lambdas) - 1 + len(zheng.taus) - 1 + 2)
    assert all(t.teacher for t in _by(full, "50_zheng2024_kdaldl") if t.what.startswith("student"))
    # 90: Ren (S5; its detector is notebook 02's), Li, Chen (Phase I + II) retrained on the official split
    assert [t.method for t in _by(full, "90_comparison")] == ["ren2019", "li2021"] + ["localiser"] * 3 + ["chen2022"]
    assert n["02_preprocessing"] == 2 and n["60_baseline_regression"] == 1


def test_a_changed_grid_changes_the_count(monkeypatch):
    before = grids.per_notebook(grids.trainings("smoke"))["30_chen2022_attention_ldl"]
    real = grids._Run.cfg
    more = lambda run, section: (real(run, section).replace(sens_lambdas=[0.0, 0.5, 1.0])  # noqa: E731
                                 if section == "chen2022" else real(run, section))
    monkeypatch.setattr(grids._Run, "cfg", more)
    assert grids.per_notebook(grids.trainings("smoke"))["30_chen2022_attention_ldl"] == before + 1


def test_dry_run_caps_images_and_steps():
    for t in grids.trainings("full", dry_run=True):
        assert t.images <= 4 and t.epochs * max(1, t.images // t.bs) <= 2 + 1e-9, t
