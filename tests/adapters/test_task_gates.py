"""MoRE's work shared by sibling layers: task gates batched over a block's layers
(adapters/task_gates.py) and first-token selections of a common input give the numbers and
gradients of each layer computing its own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smora_cli import AdapterConfig, attach, routing_context
from smora_cli.adapters import adapter_layers
from smora_cli.adapters import routers as routers_module
from smora_cli.adapters.state import aux_losses
from tests.tiny_models import llama

TASKS = ["a", "b", "c"]


def _more_llama() -> torch.nn.Module:
    model = llama(seed=3).double()
    attach(model, AdapterConfig(method="more", r=8, task_names=TASKS, alpha=8))
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # B = 0 at init would leave the gates without a gradient
        for _, layer in adapter_layers(model):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator) * 0.1)
            router = layer.router
            router.task_embedding.copy_(
                torch.randn(router.task_embedding.shape, generator=generator)
            )
    return model.train()


def _unshare(model: torch.nn.Module) -> None:
    for _, layer in adapter_layers(model):
        layer.router.share_with_siblings = False


def _step(model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids = torch.randint(3, 101, (3, 7), generator=torch.Generator().manual_seed(0))
    model.zero_grad()
    with routing_context(model, task_ids=torch.tensor([0, 2, 1])):
        logits = model(input_ids=ids).logits
        logits.pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def test_siblings_are_the_same_width_routers_of_one_block():
    model = _more_llama()
    peers = {path: [r for r in layer.router.peers] for path, layer in adapter_layers(model)}
    block = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
    block += ["mlp.gate_proj", "mlp.up_proj"]
    for index in range(2):
        layers = dict(adapter_layers(model.model.layers[index]))
        expected = [layers[name].router for name in block]
        for name in block:
            assert peers[f"model.layers.{index}.{name}"] == expected
        # down_proj reads the 48-wide MLP activations: alone in its group.
        assert peers[f"model.layers.{index}.mlp.down_proj"] == [layers["mlp.down_proj"].router]


def test_batched_gates_give_each_layers_own_outputs_and_gradients(monkeypatch):
    batched_calls = []
    original = routers_module.sibling_task_gates

    def counting(*args):
        batched_calls.append(len(args[0]))
        return original(*args)

    monkeypatch.setattr(routers_module, "sibling_task_gates", counting)
    model = _more_llama()
    logits, grads = _step(model)
    assert batched_calls == [6, 6]  # one batched node per block, for its six siblings
    _unshare(model)
    expected_logits, expected_grads = _step(model)
    assert batched_calls == [6, 6]
    torch.testing.assert_close(logits, expected_logits, rtol=1e-12, atol=1e-12)
    assert grads.keys() == expected_grads.keys()
    selectors = [n for n in grads if "selector" in n or "task_embedding" in n]
    assert len(selectors) == 3 * 14
    for name, grad in expected_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("reentrant", [False, True])
def test_batched_gates_under_activation_checkpointing(reentrant):
    model = _more_llama()
    _, expected = _step(model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    model.enable_input_require_grads()  # reentrant checkpoints need an input with a gradient
    _, grads = _step(model)
    assert grads.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_a_handed_gate_is_dropped_after_its_parameters_change():
    model = _more_llama()
    routers = [layer.router for _, layer in adapter_layers(model.model.layers[0])]
    first, sibling = routers[0], routers[1]
    with torch.no_grad():
        first._batch_gates()  # hands the sibling its gate
        assert sibling._handed is not None
        sibling.selector.weight.add_(torch.randn_like(sibling.selector.weight))  # a step
        gate = sibling._batch_gates()
        torch.testing.assert_close(gate, sibling.task_gates()[0], rtol=1e-12, atol=1e-12)
        assert sibling._handed is None
        first._batch_gates()
    # A gate made without autograd is not handed to a forward that needs gradients.
    gate = sibling._batch_gates()
    assert gate.requires_grad


def test_siblings_reading_one_input_share_its_first_tokens():
    """q, k, v (and gate, up) select the first tokens of their common input once; the
    contrastive loss and its gradients equal each layer's own selection."""
    model = _more_llama()
    inputs = {}
    for _, layer in adapter_layers(model):
        layer.register_forward_hook(lambda module, args, out: inputs.__setitem__(module, args[0]))
    ids = torch.randint(3, 101, (3, 7), generator=torch.Generator().manual_seed(0))
    task_ids = torch.tensor([0, 2, 1])
    with routing_context(model, task_ids=task_ids):
        model(input_ids=ids)
        loss = aux_losses(model)["contrastive"]
    layers = dict(adapter_layers(model.model.layers[1]))
    firsts = {name: layer.router.contrastive_inputs[0] for name, layer in layers.items()}
    assert firsts["self_attn.q_proj"] is firsts["self_attn.k_proj"] is firsts["self_attn.v_proj"]
    assert firsts["mlp.gate_proj"] is firsts["mlp.up_proj"]
    assert firsts["self_attn.o_proj"] is not firsts["self_attn.q_proj"]
    per_layer = []
    for _, layer in adapter_layers(model):
        cosine = (
            F.normalize(inputs[layer][:, 0], dim=-1)
            @ F.normalize(layer.router.task_embedding, dim=-1).T
        )
        per_layer.append(F.cross_entropy(cosine / layer.config.contrastive_temperature, task_ids))
    expected = torch.stack(per_layer).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    params = [p for p in model.parameters() if p.requires_grad]
    ours = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    theirs = torch.autograd.grad(expected, params, allow_unused=True)
    reached = 0
    for a, b in zip(ours, theirs, strict=True):
        assert (a is None) == (b is None)
        if b is not None:
            reached += int(b.abs().sum() > 0)
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert reached > 28  # task embeddings and the adapters upstream of each layer's input
