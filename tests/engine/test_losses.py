"""Lovasz-softmax and CE on hand-computed cases."""
import torch

from harness.backbones.base import learning_ids_to_targets, logits_to_learning_ids
from harness.engine.losses import lovasz_grad, lovasz_softmax, segmentation_loss


def test_lovasz_grad_hand_computed():
    # fg sorted by error: [1, 0, 1]; gts = 2; J = 1 - (2 - cumsum fg)/(2 + cumsum(1 - fg))
    # i0: 1 - 1/2 = 0.5; i1: 1 - 1/3 = 2/3; i2: 1 - 0/3 = 1 -> grad [0.5, 1/6, 1/3]
    g = lovasz_grad(torch.tensor([1.0, 0.0, 1.0]))
    torch.testing.assert_close(g, torch.tensor([0.5, 1 / 6, 1 / 3]))


def test_lovasz_softmax_perfect_and_hand_case():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert lovasz_softmax(probs, torch.tensor([0, 1])) == 0
    # one class present (0), probs of class 0 = [0.8, 0.4]: errors [0.2, 0.6] sorted [0.6, 0.2], fg [1, 1]
    # grad for all-foreground = [1/2, 1/2] -> loss 0.5*0.6 + 0.5*0.2 = 0.4; the ignored row does not count
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.0, 1.0]])
    torch.testing.assert_close(lovasz_softmax(probs, torch.tensor([0, 0, -1])), torch.tensor(0.4))


def test_targets_offset_and_ignore():
    labels = torch.tensor([0, 1, 19])
    assert learning_ids_to_targets(labels, 1).tolist() == [-1, 0, 18]
    assert learning_ids_to_targets(labels, 0).tolist() == [-1, 1, 19]
    assert logits_to_learning_ids(torch.eye(3), 1).tolist() == [1, 2, 3]
    terms = segmentation_loss(torch.zeros(3, 4), torch.tensor([-1, 2, 3]), 1.0, 1.0)
    torch.testing.assert_close(terms["ce"], torch.log(torch.tensor(4.0)))
