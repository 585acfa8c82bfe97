"""The ``one_shot`` section of an experiment: how the supernet is trained and its paths evaluated."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

from hvtnas.train import TrainConfig

# The supernet's default learning rate, as a fraction of the experiment's (stand-alone) rate. A
# step of one path moves weights that every path shares, so the supernet takes smaller steps than
# one network trained alone: on the CPU-scale task, rates of 1/8 to 1/2 of the proxy's ranked
# sub-networks at Kendall tau 0.32-0.37 over 40, the proxy's own rate at 0.13-0.21 (README).
SUPERNET_LR_FRACTION = 0.25

FinetuneScope = Literal["head", "all"]  # what the steps before an evaluation train


class OneShotConfig(BaseModel):
    """``strategy: one_shot``: train one supernet over the space (``train``; when left out, the
    experiment's own ``train`` at ``SUPERNET_LR_FRACTION`` of its learning rate), then evaluate
    every trial's architecture with the weights it inherits from it, without training.

    ``rule``: sub-networks per training step: ``uniform`` (one random path, SPOS; the default:
    it ranked better than the sandwich rule at equal wall time, README) or ``sandwich``
    (the largest and the smallest by widths, depths and ratios, plus ``sandwich_random`` random
    ones; BigNAS). ``distill`` (sandwich rule; off by default): the largest path learns from the
    labels and every other path from the largest path's predictions (inplace distillation: BigNAS,
    Yu et al. 2020; OFA), so the small paths are taught one consistent function instead of each
    fitting the labels its own way (measured: no better ranking on the CPU-scale task, lower
    inherited accuracies; see the README). ``bn_batches``: training batches that re-estimate a
    sub-network's BatchNorm statistics before it is evaluated (architectures without BatchNorm
    skip it). ``cover_samples``: random points, beside the covering ones, that size the
    supernet's shared weights.

    ``finetune_steps``: training steps each sub-network takes on its own from the weights it
    inherits before it is evaluated (0: evaluated as inherited); every trial trains on the same
    ``finetune_steps`` batches of the training split (more steps than one pass over it become
    whole passes), at a constant ``finetune_lr``, no warm-up.
    ``finetune_scope``: what those steps train. ``head``: the classifier head alone, on the
    features the inherited backbone computes (a linear probe of the supernet's features; the
    head is the one part whose options each see a fraction of the training, with inputs that
    differ by head norm, so its inherited weights misjudge whole options; README). ``all``: every
    weight (the path adapts to itself). ``finetune_lr`` defaults to the experiment's rate for
    the head, the supernet's for all weights (the rates measured best for each).

    ``constrained_sampling``: the random paths of supernet training are drawn among the points
    within the experiment's FLOPs and parameter constraints (SPOS's uniform constraint sampling,
    Guo et al. 2020, sec. 3.3): the shared weights are trained for the sub-networks the study
    evaluates, not for ones it never will. The sandwich rule's largest and smallest paths stay
    as they are; latency and memory constraints are not checked there (they need a real model).

    ``shared_ffn``: a block's FFN options (kinds, activations, biases) share its linear layers
    (the default: every path trains them); false gives each option weights of its own, so that
    no option's weights are pulled toward another's function.

    ``shared_parts``: stem and downsampling options that differ only in their norm, its position,
    padding or bias share their convolution weights; by default each option has weights of its
    own (sharing raised inherited accuracies on the CPU-scale task but not the ranking; see
    ``slot_of``)."""

    model_config = ConfigDict(extra="forbid")

    train: TrainConfig | None = None
    rule: Literal["uniform", "sandwich"] = "uniform"
    sandwich_random: NonNegativeInt = Field(2, le=16)
    distill: bool = False
    bn_batches: PositiveInt = 4
    cover_samples: NonNegativeInt = 32
    finetune_steps: NonNegativeInt = Field(64, le=100_000)
    finetune_lr: PositiveFloat | None = None
    finetune_scope: FinetuneScope = "head"
    constrained_sampling: bool = True
    shared_ffn: bool = True
    shared_parts: bool = False

    def supernet_recipe(self, experiment_train: TrainConfig) -> TrainConfig:
        """How the supernet trains: ``train`` as given, else the experiment's recipe at
        ``SUPERNET_LR_FRACTION`` of its learning rate."""
        if self.train is not None:
            return self.train
        return experiment_train.model_copy(update={"lr": experiment_train.lr * SUPERNET_LR_FRACTION})

    def finetune_rate(self, experiment_train: TrainConfig) -> float:
        """The constant learning rate of the fine-tuning steps before an evaluation."""
        if self.finetune_lr is not None:
            return self.finetune_lr
        if self.finetune_scope == "head":
            return experiment_train.lr
        return self.supernet_recipe(experiment_train).lr
