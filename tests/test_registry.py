"""The registry is the one list of methods, each method meets the contract, and settings are written once."""
import inspect
from pathlib import Path

import pytest

from bac import config, models

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mid", models.METHODS)
def test_every_method_meets_the_contract(mid):
    m = models.method(mid)
    assert m.id == mid and (REPO / "notebooks" / f"{m.notebook}.ipynb").exists()
    assert isinstance(m.settings, config.Settings) and isinstance(m.split, models.Split)
    for fn in (m.build_final, m.final_pipeline, m.fit_final):
        assert callable(fn)
    assert list(inspect.signature(m.final_pipeline).parameters)[:2] == ["cfg", "df"]
    assert list(inspect.signature(m.fit_final).parameters)[:2] == ["cfg", "df"]
    for profile in config.PROFILE_NAMES:
        cfg = config.resolve(profile, mid)
        assert cfg.paper == mid
    net = m.build_final(config.resolve("smoke", mid))
    assert models.method_of(net) is m or models.method_of(net) is None   # wrappers (Liu's BySex) live in the module


def test_the_registry_is_the_only_list_of_methods():
    """No other module or notebook spells out the list of method ids."""
    ids = [m for m in models.METHODS]
    spelled = [f'("{ids[0]}", "{ids[1]}"', f"['{ids[0]}', '{ids[1]}'", f'["{ids[0]}", "{ids[1]}"']
    for path in list((REPO / "bac").rglob("*.py")) + list((REPO / "notebooks").glob("*.ipynb")):
        if path == REPO / "bac" / "models" / "__init__.py":
            continue
        text = path.read_text()
        assert not any(s in text for s in spelled), f"{path} lists the methods; read bac.models.METHODS"


def test_every_diff_line_has_a_reason_and_changes_a_setting():
    with pytest.raises(ValueError, match="because"):
        config.Settings(full=dict(a=1), demo=dict(a=2))
    s = config.Settings(full=dict(a=1), demo=config.because("why", b=2))
    with pytest.raises(ValueError, match="changes no setting"):
        s.check(config.COMMON.full, "x")
    for name in (*config.SECTIONS, *models.METHODS):
        section = config.section(name)
        section.check(config.COMMON.full, name)
        for profile in ("smoke", "demo", "dry_run"):
            for key, (value, why) in getattr(section, profile).items():
                assert why.strip() and value != section.full.get(key, object()), (name, profile, key)


def test_explain_lists_the_profile_diff_with_its_reasons():
    t = config.explain("demo", "li2021")
    row = t[(t.section == "li2021") & (t.setting == "clahe")].iloc[0]
    assert row.full == "False" and row.here == "True" and "noise" in row.why
    assert config.explain("full", "li2021").empty and not config.explain("full", "li2021", dry_run=True).empty
    for name in (*config.SECTIONS, *models.METHODS):   # every section, profile and dry run: a full value per line
        for profile in config.PROFILE_NAMES:
            assert config.explain(profile, name, dry_run=True).full.notna().all()
    assert config.explain("smoke", "ren2019").query("setting == 'max_steps'").full.tolist() == ["None"]


def test_a_resolved_config_is_frozen_and_replace_copies():
    cfg = config.resolve("smoke", "ren2019")
    for attempt in (lambda: setattr(cfg, "size", 1), lambda: cfg.__setitem__("size", 1), lambda: cfg.update(size=1),
                    lambda: cfg.pop("size")):
        with pytest.raises(TypeError, match="frozen"):
            attempt()
    other = cfg.replace(size=1)
    assert other.size == 1 and cfg.size == 64 and isinstance(other, config.Config)
    import copy
    import pickle
    assert copy.deepcopy(cfg) == cfg and pickle.loads(pickle.dumps(cfg)) == cfg


def test_splits_follow_each_methods_rule():
    from bac.data import splits
    assert splits.rule("official").pool == "official"
    assert splits.rule("ren2019").max_age == 216.0 and splits.rule("li2021").held_out == (0.2, 0.1)
    with pytest.raises(ValueError, match="official"):
        splits.rule("nope")


def test_predict_names_the_registered_methods():
    from bac import predict
    with pytest.raises(predict.PredictError, match="method id"):
        predict.load_final("no-such-method")
