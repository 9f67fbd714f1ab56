import json
import re

import numpy as np
import pytest

from depthkit import Pipeline
from depthkit.checkpoints import (
    CheckpointError,
    load_manifest,
    read_json,
    resolve_checkpoint,
    safe_join,
    write_manifest,
)


def test_manifest_roundtrip_and_pipeline_from_pretrained(tmp_path):
    write_manifest(tmp_path / "ck", {"complete": {"method": "nearest"}})
    manifest = load_manifest(tmp_path / "ck")
    assert manifest["stages"] == {"complete": {"method": "nearest"}}
    pipe = Pipeline.from_pretrained(tmp_path / "ck")
    assert pipe.stages[0].method.name == "nearest"
    image = np.zeros((6, 7, 3), np.uint8)
    sparse = np.zeros((6, 7), np.float32)
    sparse[2, 3] = 1.5
    np.testing.assert_array_equal(pipe(image, sparse).depth, np.full((6, 7), 1.5, np.float32))


@pytest.mark.parametrize("spec, got", [(123, "received int"), ("", "received ''"), ("  ", "received '  '"),
                                       (["ck"], "received list")])
def test_a_checkpoint_that_is_no_path_is_refused_saying_so(spec, got):
    """Pipeline(checkpoint=123) was a bare TypeError from inside pathlib; checkpoint="" was read as the current folder
    (". is not a depthkit checkpoint")."""
    with pytest.raises(CheckpointError, match=rf"checkpoint must be a checkpoint folder .*; {re.escape(got)}\.$"):
        Pipeline(checkpoint=spec)


def test_missing_checkpoint_error_lists_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="init-checkpoint"):
        resolve_checkpoint(tmp_path / "nope" / "deeper")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "weights.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"depthkit.json is missing \(found: weights.bin\)"):
        load_manifest(tmp_path / "empty")
    for i in range(20):  # a folder of many files (a dataset given by mistake) is named by a few of them
        (tmp_path / "many" / f"frame_{i:02d}.png").parent.mkdir(exist_ok=True)
        (tmp_path / "many" / f"frame_{i:02d}.png").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"\(found: frame_00.png, .*, frame_07.png and 12 more\)"):
        load_manifest(tmp_path / "many")


def test_corrupt_manifest_names_the_file(tmp_path):
    (tmp_path / "depthkit.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="depthkit.json is corrupt"):
        load_manifest(tmp_path)
    (tmp_path / "depthkit.json").write_text(json.dumps({"format": "depthkit-checkpoint", "format_version": 99,
                                                        "stages": {"complete": {}}}))
    with pytest.raises(CheckpointError, match="Upgrade depthkit"):
        load_manifest(tmp_path)
    head = {"format": "depthkit-checkpoint", "format_version": 1}
    (tmp_path / "depthkit.json").write_text(json.dumps({**head, "stages": "complete"}))
    with pytest.raises(CheckpointError, match=r'lists no stages \("stages" is "complete", not an object\); '
                                              r"expected an object from stage name to its options"):
        load_manifest(tmp_path)
    (tmp_path / "config.json").write_text("[1,")  # a file read without a role: no "it is the file."
    with pytest.raises(CheckpointError, match=r"config.json is corrupt \(not valid JSON: .*\)\. Re-create"):
        read_json(tmp_path / "config.json")


def test_a_misspelt_stage_in_the_manifest_is_refused_not_dropped(tmp_path):
    write_manifest(tmp_path, {"complete": {"method": "nearest"}, "sharpenn": {}})
    with pytest.raises(CheckpointError, match=r"depthkit.json lists stage\(s\) \['sharpenn'\] that depthkit does not "
                                              r"know; stages are complete, sharpen"):
        Pipeline.from_pretrained(tmp_path)
    # with the stages asked for, or with only misspelt stages, the error still names the misspelt one (not "no
    # ['sharpen'] stage(s)" or "no stages given")
    with pytest.raises(CheckpointError, match=r"lists stage\(s\) \['sharpenn'\] that depthkit does not know"):
        Pipeline.from_pretrained(tmp_path, stages=("complete", "sharpen"))
    write_manifest(tmp_path, {"completer": {"method": "nearest"}})
    with pytest.raises(CheckpointError, match=r"lists stage\(s\) \['completer'\] that depthkit does not know"):
        Pipeline.from_pretrained(tmp_path)
    # every reader of a manifest refuses it, not only the Pipeline: `depthkit ls`, Pipeline(checkpoint=...)
    with pytest.raises(CheckpointError, match=r"lists stage\(s\) \['completer'\] that depthkit does not know"):
        load_manifest(tmp_path)
    with pytest.raises(CheckpointError, match=r"lists stage\(s\) \['completer'\] that depthkit does not know"):
        Pipeline(checkpoint=tmp_path)


def test_the_manifest_knows_the_stages_the_pipeline_implements():
    """The stage names a manifest may list are the stage table's, in its run order."""
    from depthkit.checkpoints import CHECKPOINT_STAGES
    from depthkit.stages import STAGE_ORDER

    assert CHECKPOINT_STAGES == STAGE_ORDER


def test_a_misspelt_manifest_key_is_refused_and_a_record_key_kept(tmp_path):
    """default_stage (for default_stages) would be kept as a record and the default silently not applied."""
    for key, meant in (("default_stage", "default_stages"), ("qualty", "quality"), ("Default_Stages", "default_stages")):
        write_manifest(tmp_path, {"complete": {"method": "nearest"}}, **{key: ["complete"]})
        with pytest.raises(CheckpointError, match=rf"key '{key}' is not one depthkit reads; did you mean '{meant}'"):
            load_manifest(tmp_path)
    write_manifest(tmp_path, {"complete": {"method": "nearest"}}, steps=100, tiny=True, trained_from="x", seed=3)
    assert load_manifest(tmp_path)["steps"] == 100  # records: not close to any key depthkit reads


def test_checkpoint_without_requested_stage(tmp_path):
    write_manifest(tmp_path, {"complete": {"method": "nearest"}})
    with pytest.raises(ValueError, match="no \\['sharpen'\\] stage"):
        Pipeline.from_pretrained(tmp_path, stages=("complete", "sharpen"))


def test_safe_join_refuses_escapes(tmp_path):
    assert safe_join(tmp_path, "complete/model.safetensors") == (tmp_path / "complete/model.safetensors").resolve()
    with pytest.raises(CheckpointError, match="outside"):
        safe_join(tmp_path, "../../etc/passwd")
    with pytest.raises(CheckpointError, match="absolute"):
        safe_join(tmp_path, "/etc/passwd")


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-depthkit-hf-home")
    with pytest.raises(CheckpointError, match=r"HF_HUB_OFFLINE=1.*\), and there is no local folder "
                                              r".*someone/not-a-real-depthkit-model\."):
        resolve_checkpoint("someone/not-a-real-depthkit-model")


def test_explicit_method_overrides_the_manifest(tmp_path):
    write_manifest(tmp_path, {"complete": {"method": "nearest"}})
    assert Pipeline.from_pretrained(tmp_path, method="guided").stages[0].method.name == "guided"
    assert Pipeline.from_pretrained(tmp_path).stages[0].method.name == "nearest"


def test_a_manifest_write_that_fails_leaves_no_temporary(tmp_path):
    """write_manifest writes through depthkit.io.atomic_write: a folder named depthkit.json in the way is named in
    the error, and no hidden temporary is left beside it."""
    from depthkit.checkpoints import write_manifest

    (tmp_path / "depthkit.json").mkdir()
    with pytest.raises(IsADirectoryError, match="a folder of that name is in the way"):
        write_manifest(tmp_path, {"complete": {"method": "guided"}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depthkit.json"]


def test_folder_identity_follows_contents_not_where_or_when_the_files_were_written(tmp_path):
    """The identity results record of a checkpoint: the same files copied elsewhere with other modification times (a
    fresh clone, another machine) have the same one, so runs made there merge; one byte edited in place (same size,
    as a retrain in place leaves the sizes) or a file renamed gives another."""
    import os
    import shutil
    from pathlib import Path

    from depthkit.checkpoints import folder_identity

    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "w.bin").write_bytes(bytes(range(256)) * 10)
    (a / "sub" / "c.json").write_text('{"x": 1}')
    b = Path(shutil.copytree(a, tmp_path / "b"))
    for f in b.rglob("*"):
        os.utime(f, (12345, 12345))
    assert folder_identity(a) == folder_identity(b)
    data = bytearray((b / "w.bin").read_bytes())
    data[-1] ^= 1
    (b / "w.bin").write_bytes(bytes(data))  # a write moves the modification time, so the cached read is redone
    assert folder_identity(b) != folder_identity(a)
    (b / "w.bin").write_bytes(bytes(range(256)) * 10)
    (b / "sub" / "c.json").rename(b / "sub" / "d.json")
    assert folder_identity(b) != folder_identity(a)
