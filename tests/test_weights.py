"""Pretrained backbone weights: torchvision checkpoints (exact key names and shapes) load, a wrong
file is a clear error, a weights folder is found per backbone, `bench weights check`, and the
`paper` budget refusing a real dataset without weights unless --random-init."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.models import (BACKBONES, build_classifier, find_weights, load_backbone_weights, resolve_weights,
                          weight_file_names)
from bench.settings import RunSettings


def _bn(prefix: str, n: int, counter: bool = True) -> dict:
    out = {f"{prefix}.weight": torch.ones(n), f"{prefix}.bias": torch.zeros(n),
           f"{prefix}.running_mean": torch.zeros(n), f"{prefix}.running_var": torch.ones(n)}
    if counter:
        out[f"{prefix}.num_batches_tracked"] = torch.tensor(0)
    return out


def torchvision_state(name: str, counters: bool = True) -> dict:
    """A state dict under torchvision's names and shapes: our module's (it is laid out like
    torchvision's), minus the WSOL layers torchvision lacks, plus torchvision's classifier (and
    Inception's auxiliary head and Mixed_7 blocks, abridged), with or without BatchNorm counters
    (torchvision's first ResNet-50 / Inception-v3 files predate them)."""
    net = BACKBONES[name]()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v.clone() for k, v in net.state_dict().items()
             if not k.startswith(getattr(net, "new_prefixes", ()) or ("\0",))}
    if name == "resnet50":
        state.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    elif name == "vgg16":
        state.update({"classifier.0.weight": torch.zeros(4096, 25088), "classifier.0.bias": torch.zeros(4096),
                      "classifier.3.weight": torch.zeros(4096, 4096), "classifier.3.bias": torch.zeros(4096),
                      "classifier.6.weight": torch.zeros(1000, 4096), "classifier.6.bias": torch.zeros(1000)})
    elif name == "inceptionv3":
        state.update({"AuxLogits.conv0.conv.weight": torch.zeros(128, 768, 1, 1), **_bn("AuxLogits.conv0.bn", 128),
                      "AuxLogits.conv1.conv.weight": torch.zeros(768, 128, 5, 5), **_bn("AuxLogits.conv1.bn", 768),
                      "AuxLogits.fc.weight": torch.zeros(1000, 768), "AuxLogits.fc.bias": torch.zeros(1000),
                      "Mixed_7a.branch3x3_1.conv.weight": torch.zeros(192, 768, 1, 1),
                      **_bn("Mixed_7a.branch3x3_1.bn", 192),
                      "Mixed_7c.branch_pool.conv.weight": torch.zeros(192, 2048, 1, 1),
                      "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    if not counters:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return state


def test_torchvision_key_counts():
    """torchvision's resnet50 state dict has 320 entries (267 without BatchNorm counters) and
    vgg16's 32: ours with torchvision's classifier must match those counts."""
    assert len(torchvision_state("resnet50")) == 320
    assert len(torchvision_state("resnet50", counters=False)) == 267
    assert len(torchvision_state("vgg16")) == 32


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "inceptionv3"])
@pytest.mark.parametrize("counters", [True, False], ids=["counters", "pre-0.4.1"])
def test_torchvision_checkpoint_loads(name, counters, tmp_path):
    state = torchvision_state(name, counters)
    path = tmp_path / weight_file_names(name)[0]
    torch.save(state, path)
    net = BACKBONES[name]()
    new = {k: v.clone() for k, v in net.state_dict().items() if k.startswith(getattr(net, "new_prefixes", ()) or ("\0",))}
    load_backbone_weights(net, path)
    own = net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if k in own)
    assert all(torch.equal(own[k], v) for k, v in new.items())  # WSOL layers keep their initialisation


def test_wrong_file_names_the_first_bad_key(tmp_path):
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(torchvision_state("vgg16"), path)
    with pytest.raises(ValueError, match=r"vgg16-397923af\.pth: weights do not match the backbone; first bad key "
                                         r"'conv1\.weight' \(missing\)"):
        load_backbone_weights(BACKBONES["resnet50"](), path)
    state = torchvision_state("resnet50")
    state["layer2.0.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"first bad key 'layer2\.0\.conv2\.weight' \(wrong shape\).*"
                                         r"wrong shapes: \['layer2\.0\.conv2\.weight \(128, 128, 1, 1\) "
                                         r"\(backbone \(128, 128, 3, 3\)\)'\]"):
        load_backbone_weights(BACKBONES["resnet50"](), path)


def test_weights_folder_is_found_per_backbone(tmp_path):
    assert find_weights("resnet50", tmp_path) is None
    torch.save({}, tmp_path / "resnet50.pth")
    assert find_weights("resnet50", tmp_path) == tmp_path / "resnet50.pth"
    torch.save({}, tmp_path / "resnet50-19c8e357.pth")  # torchvision's names come first
    assert find_weights("resnet50", tmp_path) == tmp_path / "resnet50-19c8e357.pth"
    assert find_weights("vgg16", tmp_path) is None
    assert resolve_weights("resnet50", "/x/explicit.pth", tmp_path) == Path("/x/explicit.pth")
    settings = RunSettings(budget=None, data_root=tmp_path, results_dir=tmp_path, cache_dir=tmp_path,
                           backbone="resnet50", weights_dir=str(tmp_path))
    assert settings.backbone_weights() == tmp_path / "resnet50-19c8e357.pth"
    with pytest.raises(FileNotFoundError, match="weights folder .*nowhere does not exist"):
        find_weights("vgg16", tmp_path / "nowhere")


def test_build_classifier_from_a_found_file(tmp_path):
    torch.save(torchvision_state("vgg16"), tmp_path / "vgg16-397923af.pth")
    model = build_classifier("vgg16", 3, find_weights("vgg16", tmp_path))
    assert model.classifier.out_features == 3


def test_weights_check_command(tmp_path, capsys):
    torch.save(torchvision_state("vgg16"), tmp_path / "vgg16-397923af.pth")
    torch.save(torchvision_state("resnet50", counters=False), tmp_path / "resnet50-19c8e357.pth")
    (tmp_path / "notes.txt").write_text("x")
    assert main(["weights", "check", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "vgg16: ok vgg16-397923af.pth" in out and "resnet50: ok resnet50-19c8e357.pth" in out
    assert "inceptionv3: missing (looked for inception_v3_google-0cc3c7bd.pth" in out
    assert "not used: notes.txt" in out
    torch.save(torchvision_state("resnet50"), tmp_path / "inceptionv3.pth")  # a wrong file
    assert main(["weights", "check", "--weights-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "inceptionv3: BAD inceptionv3.pth" in out and "first bad key 'Conv2d_1a_3x3.conv.weight' (missing)" in out
    assert "vgg16: ok" in out
    assert main(["weights", "check", "--weights-dir", str(tmp_path), "--backbone", "vgg16"]) == 0
    assert "inceptionv3" not in capsys.readouterr().out.split("not used")[0]


def test_paper_budget_on_a_real_dataset_needs_weights(tmp_path, capsys, monkeypatch):
    from tests.test_real_datasets import write_tree

    monkeypatch.delenv("WSOLBENCH_WEIGHTS", raising=False)
    root = write_tree("cub", tmp_path / "data")
    common = ["run", "--methods", "cam", "--datasets", "cub", "--seeds", "0", "--budget", "paper", "--device", "cpu",
              "--backbone", "small-cnn", "--data-root", str(root), "--results", str(tmp_path / "res" / "results"),
              "--cache-dir", str(tmp_path / "cache"), "--jobs", "1"]
    assert main(common) == 2
    err = capsys.readouterr().err
    assert "cub: the paper budget starts small-cnn from ImageNet weights, and none was found" in err
    assert "--random-init" in err and "small-cnn.pth" in err
    assert not (tmp_path / "res" / "results").exists()  # refused before any cell started


def test_random_init_entry_is_marked_and_shown(tmp_path):
    """The guard and the marker without training: the refusal, the flag in the entry, the table."""
    from bench.leaderboard import render_markdown
    from bench.registry import get_dataset
    from bench.config import BUDGETS
    from bench.runner import needs_pretrained, random_init_refusal

    cub, synth = get_dataset("cub")(), get_dataset("synth-objects")()
    base = RunSettings(budget=BUDGETS["paper"], data_root=tmp_path, results_dir=tmp_path, cache_dir=tmp_path,
                       backbone="resnet50")
    assert random_init_refusal(cub, base) and random_init_refusal(synth, base) is None
    assert random_init_refusal(cub, base.replace(budget=BUDGETS["quick"])) is None
    assert random_init_refusal(cub, base.replace(random_init=True)) is None
    assert needs_pretrained(cub, base.replace(random_init=True))
    torch.save({}, tmp_path / "resnet50.pth")
    assert not needs_pretrained(cub, base.replace(weights_dir=str(tmp_path)))
    rec = {"status": "ok", "dataset": "cub", "method": "cam", "seed": 0, "budget": "paper", "backbone": "resnet50",
           "primary_metric": "MaxBoxAccV2", "metrics": {"MaxBoxAccV2": 50.0}, "timings": {"fit_s": 1.0},
           "random_init": True}
    assert "cam (off-protocol: random init)" in render_markdown([rec])
    assert "off-protocol" not in render_markdown([{**rec, "random_init": False}])
