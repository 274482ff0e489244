import torch

from pai.models.he_resnet import resnet20
from pai.pruning import make_masks, prunable_weights
from pai.pruning.criteria.magnitude import Magnitude
from pai.pruning.criteria.random import Random


def test_random_scores_are_independent_of_the_initialization():
    # Regression: with the run's seed used both for torch.manual_seed (init) and the score generator, the
    # "random" scores were a monotone function of the first layer's weights.
    for seed in (0, 42):
        torch.manual_seed(seed)
        model = resnet20(num_classes=10, in_channels=1, width=0.5)
        scores = Random(seed).score(model, torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long))
        for name, w in prunable_weights(model).items():
            corr = torch.corrcoef(torch.stack([scores[name].flatten(), w.detach().flatten()]))[0, 1]
            assert abs(corr) < 0.35, (seed, name, corr)


def test_random_same_seed_same_mask_and_uniform_layer_density():
    model = resnet20(num_classes=10, in_channels=3)
    x, y = torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)
    a = make_masks({n: s for n, s in Random(3).score(model, x, y).items() if n != "linear.weight"}, 0.8)
    b = make_masks({n: s for n, s in Random(3).score(model, x, y).items() if n != "linear.weight"}, 0.8)
    assert all(torch.equal(a[n], b[n]) for n in a)
    for n, m in a.items():  # random global pruning gives every large layer about the same density
        if m.numel() > 2000:
            assert abs(m.float().mean().item() - 0.2) < 0.03, n


def test_magnitude_keeps_the_largest_weights():
    model = resnet20(num_classes=10, in_channels=3)
    scores = Magnitude().score(model, torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long))
    masks = make_masks({n: scores[n] for n in prunable_weights(model)}, 0.9)
    kept_min = min(w.detach().abs()[masks[n]].min() for n, w in prunable_weights(model).items() if masks[n].any())
    pruned_max = max(w.detach().abs()[~masks[n]].max() for n, w in prunable_weights(model).items())
    assert kept_min >= pruned_max
