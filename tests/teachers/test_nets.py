"""Networks in reduced precision: bf16 weights (DeepSpeed's bf16 mode) and fp32 weights under autocast."""

import pytest
import torch

from teachers.nets import build_network
from teachers.precision import autocast


@pytest.mark.parametrize(
    "arch,shape,kwargs",
    [
        ("mlp", (2,), {"hidden": 16, "depth": 1, "time_embed_dim": 8}),
        ("unet", (1, 8, 8), {"channels": 16, "time_embed_dim": 16}),
    ],
)
def test_bf16_weights_and_autocast_forward_in_bf16(arch, shape, kwargs):
    net = build_network(arch, shape, time_inputs=2, **kwargs)
    x, t = torch.randn(3, *shape), torch.rand(3)
    with autocast(torch.device("cpu"), "bf16"):
        assert net(x, t, t).dtype == torch.bfloat16  # fp32 weights, bf16 compute
    net = net.to(torch.bfloat16)  # the time features are fp32 and must meet bf16 weights
    assert net(x.bfloat16(), t, t).dtype == torch.bfloat16
