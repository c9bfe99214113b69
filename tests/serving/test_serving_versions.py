"""Versions: the latest is served, new ones load without dropping requests, old ones unload, a half-written
or broken directory is never served; version policies and labels; models.config reload."""

from __future__ import annotations

import shutil
import time

import pytest

from serving.repository import AVAILABLE, END, ModelManager
from serving.rest import ServingError
from serving.runtime import load_servable
from tests.serving_fixtures import copy_version


@pytest.fixture()
def repo(tmp_path, serving_models):
    """A models dir with model 'm' holding version 1 (= hupa0002p/1); sources for more versions."""
    root = tmp_path / "models"
    copy_version(serving_models / "hupa0002p" / "1", root / "m", 1)
    return root, serving_models / "hupa0002p" / "1", serving_models / "hupa0003p" / "1"


def counting_loader():
    calls: list[tuple[str, int]] = []

    def load(name, version, path):
        calls.append((name, version))
        return load_servable(name, version, path)

    return load, calls


def test_latest_is_served_and_the_old_version_unloaded(repo):
    root, _, other = repo
    mgr = ModelManager(models_dir=root, poll_seconds=0, settle_seconds=0.05)
    mgr.poll_once()
    assert mgr.resolve("m").version == 1
    copy_version(other, root / "m", 2)
    mgr.poll_once()
    assert mgr.resolve("m").version == 2
    status = {s["version"]: s["state"] for s in mgr.status("m")}
    assert status == {"2": AVAILABLE, "1": END}
    with pytest.raises(ServingError) as info:
        mgr.resolve("m", 1)
    assert info.value.status == 404
    assert [s.version for s in mgr.loaded()] == [2]


def test_half_written_and_broken_versions_are_never_served(repo):
    root, src, _ = repo
    load, calls = counting_loader()
    mgr = ModelManager(models_dir=root, poll_seconds=0, settle_seconds=0.05, loader=load)
    mgr.poll_once()
    # 2: saved_model.pb written, variables still being copied (no index yet)
    half = root / "m" / "2"
    (half / "variables").mkdir(parents=True)
    shutil.copy(src / "saved_model.pb", half / "saved_model.pb")
    shutil.copy(src / "variables" / "variables.data-00000-of-00001", half / "variables" / "variables.data-00000-of-00001")
    # a hidden temporary directory, as exporters write before renaming
    shutil.copytree(src, root / "m" / ".tmp-export-3")
    mgr.poll_once()
    assert mgr.resolve("m").version == 1
    assert ("m", 2) not in calls
    # 4: complete on disk but corrupt: the load fails, the error is reported, version 1 keeps serving
    broken = root / "m" / "4"
    shutil.copytree(src, broken)
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    mgr.poll_once()
    assert mgr.resolve("m").version == 1
    st = mgr.status("m", 4)[0]
    assert st["state"] == END and st["status"]["error_code"] != "OK" and "4" in st["status"]["error_message"]
    n = len(calls)
    mgr.poll_once()
    assert len(calls) == n, "an unchanged broken version must not be reloaded on every poll"
    # once the half-written one is complete it loads (4 is still broken: 2 is the newest good one...)
    shutil.rmtree(broken)
    shutil.copy(src / "variables" / "variables.index", half / "variables" / "variables.index")
    time.sleep(0.1)
    mgr.poll_once()
    assert mgr.resolve("m").version == 2


def test_specific_policy_labels_and_config_reload(repo, tmp_path):
    root, _, other = repo
    copy_version(other, root / "m", 2)
    conf = tmp_path / "models.config"
    conf.write_text('model_config_list { config { name: "m" base_path: "%s" '
                    'model_version_policy { specific { versions: 1 versions: 2 } } '
                    'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } } }'
                    % (root / "m"))
    mgr = ModelManager(model_config=conf, poll_seconds=0, settle_seconds=0.05)
    mgr.poll_once()
    assert mgr.resolve("m").version == 2  # no version asked: the highest served
    assert mgr.resolve("m", label="stable").version == 1
    assert mgr.resolve("m", label="canary").version == 2
    with pytest.raises(ServingError) as info:
        mgr.resolve("m", label="beta")
    assert info.value.status == 400
    # reload: the config now serves only version 1 and adds a model
    copy_version(other, tmp_path / "n", 7)
    conf.write_text('model_config_list {{ config {{ name: "m" base_path: "{}" '
                    'model_version_policy {{ specific {{ versions: 1 }} }} }} '
                    'config {{ name: "n" base_path: "{}" }} }}'.format(root / "m", tmp_path / "n"))
    time.sleep(0.01)
    mgr.poll_once()
    assert mgr.resolve("m").version == 1 and mgr.resolve("n").version == 7
    # a broken config is logged and ignored: the models keep serving
    conf.write_text("model_config_list { config { name: ")
    mgr.poll_once()
    assert mgr.resolve("n").version == 7
