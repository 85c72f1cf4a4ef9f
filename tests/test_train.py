"""The training loop keeps in `model.pt` the latest evaluated checkpoint unless the held-out risk estimate finds it
clearly worse than the one kept: noisy estimates must not hand back an early network."""
import math

import pytest
import torch
from torch import nn

from sslrecon.engine.train import CLEAR, clearly_worse, train
from sslrecon.losses.base import Loss, LossOutput
from sslrecon.physics import DENOISING


def _standard(n: int, seed: int) -> torch.Tensor:
    z = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return (z - z.mean()) / z.std()


@pytest.mark.parametrize("shift, worse", [(-0.5, False), (0.0, False), (0.05, False), (0.2, True)])
def test_clearly_worse_takes_the_paired_difference_beyond_its_standard_error(shift, worse):
    kept = torch.rand(32, generator=torch.Generator().manual_seed(0))
    # estimates scattered about the kept ones' by 0.3: the mean difference's standard error is 0.053
    new = kept + shift + 0.3 * _standard(32, 1)
    assert clearly_worse(new, kept) == worse == (shift > CLEAR * 0.3 / math.sqrt(32))
    assert not clearly_worse(new, None)  # nothing kept yet


class _Scripted(Loss):
    """Trains towards the input; its held-out risk estimates are given, one per evaluation."""
    name, needs_noise = "scripted", False

    def __init__(self, risks):
        super().__init__()
        self.script = list(risks)

    def forward(self, model, y, physics=DENOISING, generator=None):
        return LossOutput(((model(y) - y) ** 2).mean(), {})

    def risk(self, model, y, physics=DENOISING, generator=None):
        return self.script.pop(0)


class _Noise:
    def sample(self, batch, generator):
        return torch.randn(batch, 1, 8, 8, generator=generator), [0] * batch


def test_model_pt_follows_training_unless_validation_sees_it_clearly_worse(tmp_path):
    base = torch.linspace(1.0, 2.0, 8)  # (one chunk of `evaluate`)
    noisy_higher = base + 0.05 + 0.3 * _standard(8, 2)  # higher on average, within its noise: step 4 replaces step 2
    risks = [base, noisy_higher, noisy_higher + 1.0]  # then clearly higher than step 4's: step 6 is not kept
    summary = train(model=nn.Conv2d(1, 1, 3, padding=1), loss=_Scripted(risks), sampler=_Noise(),
                    val_batch=(torch.zeros(8, 1, 8, 8), [0] * 8), physics_for=lambda sources: DENOISING, steps=6,
                    batch_size=2, lr=1e-3, val_every=2, seed=0, run_dir=tmp_path, device=torch.device("cpu"),
                    make_state=dict, progress=False)
    kept, last = (torch.load(tmp_path / name, weights_only=True) for name in ("model.pt", "last.pt"))
    assert kept["step"] == 4 and last["step"] == 6
    assert torch.allclose(torch.tensor(last["kept_val"]), noisy_higher)  # what a resumed run compares against
    assert summary["best_val_mse"] == pytest.approx(float(noisy_higher.mean()))
    assert summary["last_val_mse"] == pytest.approx(float(noisy_higher.mean()) + 1.0)
