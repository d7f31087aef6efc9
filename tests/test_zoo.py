"""The mini zoo: shipped weights, piece-wise affine layout, block layers, accuracy on a fresh split."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from torch import nn

from pwawidgets import zoo
from pwawidgets.data import SHAPE_CLASSES, shapes
from pwawidgets.zoo.architectures import BasicBlock, MiniResNet, MiniVGG, Normalize
from pwawidgets.zoo.train import TEST_SEED, TRAIN_SEED, Recipe, accuracy, train, train_many

FRESH_SEED = 12345  # never used in training (training uses 1000-1099, the card's own test uses TEST_SEED)
FRESH_IMAGES = 2000

PIECEWISE_AFFINE_LEAVES = (
    nn.Conv2d,
    nn.Linear,
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.BatchNorm2d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
    Normalize,
)
CONTAINERS = (nn.Sequential, MiniVGG, MiniResNet, BasicBlock)


@pytest.fixture(scope="module")
def fresh() -> tuple[torch.Tensor, torch.Tensor]:
    batch = shapes(FRESH_IMAGES, seed=FRESH_SEED)
    return batch.images, batch.labels


@pytest.fixture(scope="module", params=zoo.NAMES)
def net(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    return request.param, zoo.load(request.param)


def test_names() -> None:
    assert zoo.NAMES == ("mini_vgg", "mini_vgg_bn", "mini_resnet", "mini_vgg_fc")


@pytest.mark.parametrize("call", [zoo.build, zoo.load, zoo.card])
def test_unknown_name_lists_valid_names(call) -> None:
    with pytest.raises(ValueError) as info:
        call("vgg19")
    assert "vgg19" in str(info.value) and all(name in str(info.value) for name in zoo.NAMES)


def test_weights_are_small_float32_state_dicts() -> None:
    for name in zoo.NAMES:
        path = zoo.weights_path(name)
        assert path.stat().st_size < (2.5 if name == "mini_vgg_fc" else 1.5) * 2**20
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
        assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
        assert state.keys() == zoo.build(name).state_dict().keys()


def test_loaded_net_is_in_eval_mode(net: tuple[str, nn.Module]) -> None:
    name, model = net
    assert not any(m.training for m in model.modules())
    assert zoo.build(name).training  # a fresh build is left in training mode


def test_only_piecewise_affine_modules(net: tuple[str, nn.Module]) -> None:
    _, model = net
    for name, module in model.named_modules():
        if len(list(module.children())) == 0:
            assert isinstance(module, PIECEWISE_AFFINE_LEAVES), f"{name}: {type(module).__name__}"
        else:
            assert isinstance(module, CONTAINERS), f"{name}: {type(module).__name__}"
    assert isinstance(next(iter(model.children())), Normalize)  # input centring is the first, fixed layer


def test_attributes(net: tuple[str, nn.Module]) -> None:
    name, model = net
    assert tuple(model.class_names) == SHAPE_CLASSES
    assert model.preprocessing.normalization == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert (model.preprocessing.size, model.preprocessing.crop) == (64, 64)
    expected = ["conv1", "conv2", "conv3", "conv4"] if "vgg" in name else ["stem", "layer1", "layer2", "layer3"]
    assert list(model.block_layers) == expected
    if "vgg" in name:
        assert isinstance(model.features, nn.Sequential) and isinstance(model.classifier, nn.Module)
        for module_name in model.block_layers.values():  # the last ReLU of each block, right before its pool
            idx = int(module_name.split(".")[1])
            assert isinstance(model.features[idx], nn.ReLU)
            assert isinstance(model.features[idx + 1], nn.MaxPool2d)


def test_each_relu_runs_once_and_block_layers_are_relu_outputs(
    net: tuple[str, nn.Module], fresh: tuple[torch.Tensor, torch.Tensor]
) -> None:
    _, model = net
    modules = dict(model.named_modules())
    calls: Counter[str] = Counter()
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []

    def count(name: str):
        def hook(module, args, output):
            calls[name] += 1

        return hook

    def keep(name: str):
        def hook(module, args, output):
            seen[name] = (output, output.detach().clone())  # the live tensor and its value when handed on

        return hook

    try:
        for name, module in modules.items():
            if isinstance(module, nn.ReLU):
                handles.append(module.register_forward_hook(count(name)))
        for alias, name in model.block_layers.items():
            assert name in modules, f"{alias} -> {name} is not a module"
            handles.append(modules[name].register_forward_hook(keep(name)))
        with torch.no_grad():
            model(fresh[0][:16])
    finally:
        for handle in handles:
            handle.remove()
    relus = [n for n, m in modules.items() if isinstance(m, nn.ReLU)]
    assert relus and all(calls[n] == 1 for n in relus), calls  # one module name per ReLU call
    for alias, name in model.block_layers.items():
        live, value = seen[name]
        assert value.min() >= 0 and value.max() > 0, alias  # a ReLU output
        assert torch.equal(live, value), f"{alias}: overwritten in place after it was handed on"


def test_residual_add_leaves_block_input_untouched(fresh: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = zoo.load("mini_resnet")
    saved = {}

    def pre(name: str):
        def hook(module, args):
            saved[name] = (args[0], args[0].detach().clone())

        return hook

    handles = [m.register_forward_pre_hook(pre(n)) for n, m in model.named_modules() if isinstance(m, BasicBlock)]
    try:
        with torch.no_grad():
            model(fresh[0][:8])
    finally:
        for handle in handles:
            handle.remove()
    assert len(saved) == 3
    for name, (live, value) in saved.items():
        assert torch.equal(live, value), name


def test_accuracy_on_fresh_split(net: tuple[str, nn.Module], fresh: tuple[torch.Tensor, torch.Tensor]) -> None:
    name, model = net
    card = zoo.card(name)
    assert FRESH_SEED not in card["data"]["train_seeds"] and FRESH_SEED != card["data"]["test_seed"]
    acc = accuracy(model, *fresh)
    assert acc >= card["test_accuracy"] - 0.02, (name, acc, card["test_accuracy"])
    assert acc >= 0.90, (name, acc)


def test_cards(net: tuple[str, nn.Module]) -> None:
    name, model = net
    card = zoo.card(name)
    for key in ("data", "torch_seed", "epochs", "test_accuracy", "parameters", "train_time_s", "recipe"):
        assert key in card, key
    assert card["name"] == name
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["data"]["test_seed"] == TEST_SEED and card["data"]["test_images"] >= 2000
    assert card["data"]["train_seeds"] == [TRAIN_SEED + e for e in range(card["epochs"])]
    assert card["block_layers"] == dict(model.block_layers)
    assert 0.9 <= card["test_accuracy"] <= 1.0


def test_training_is_deterministic_and_writes_loadable_files(tmp_path) -> None:
    recipe = Recipe(epochs=1, images_per_epoch=128, batch_size=64)
    cards = [train("mini_vgg_bn", recipe, out_dir=tmp_path / str(k), progress=False, test_images=60) for k in (0, 1)]
    first, second = (torch.load(tmp_path / str(k) / "mini_vgg_bn.pt", weights_only=True) for k in (0, 1))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert cards[0]["test_accuracy"] == cards[1]["test_accuracy"]
    assert json.loads((tmp_path / "0" / "mini_vgg_bn.json").read_text())["recipe"]["epochs"] == 1
    zoo.build("mini_vgg_bn").load_state_dict(first)  # strict: every key and shape matches


def test_training_side_by_side_equals_training_alone(tmp_path) -> None:
    recipe = Recipe(epochs=2, images_per_epoch=128, batch_size=64)
    names = ["mini_vgg", "mini_resnet"]
    train_many(names, {n: recipe for n in names}, out_dir=tmp_path / "together", progress=False, test_images=60)
    for name in names:
        train(name, recipe, out_dir=tmp_path / name, progress=False, test_images=60)
        alone = torch.load(tmp_path / name / f"{name}.pt", weights_only=True)
        together = torch.load(tmp_path / "together" / f"{name}.pt", weights_only=True)
        assert all(torch.equal(alone[k], together[k]) for k in alone), name


def test_mini_vgg_fc_is_mini_vgg_with_vggs_fully_connected_head() -> None:
    fc, plain = zoo.build("mini_vgg_fc"), zoo.build("mini_vgg")
    features = {k: v.shape for k, v in fc.state_dict().items() if k.startswith("features.")}
    assert features == {k: v.shape for k, v in plain.state_dict().items() if k.startswith("features.")}
    linears = [m for m in fc.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(128 * 4 * 4, 128), (128, 128), (128, 6)]
    assert all(m.bias is not None for m in linears) and isinstance(fc.pool, nn.Identity)
    assert not any(isinstance(m, nn.Dropout) for m in fc.modules())  # no draws from the global random state
    assert fc(torch.rand(2, 3, 64, 64)).shape == (2, 6)


def test_the_fc_heads_biases_are_part_of_the_bias_at_conv1(fresh: tuple[torch.Tensor, torch.Tensor]) -> None:
    import pwawidgets as pw

    model = zoo.load("mini_vgg_fc").double()
    x, y = fresh[0][:4].double(), fresh[1][:4]
    from bias_oracle import Frozen, part

    sources = pw.bias_sources(model, x, y, "conv1")
    frozen = Frozen(model, x, model.block_layers["conv1"])  # the network frozen at its activation pattern
    for name in ("classifier.1", "classifier.3", "classifier.5"):
        torch.testing.assert_close(sources[name], part(frozen({name}), sources.target), rtol=0, atol=1e-10)
    torch.testing.assert_close(sources.bias, part(frozen(), sources.target), rtol=0, atol=1e-10)
    assert float(sources.remainder.abs().max()) < 1e-10
