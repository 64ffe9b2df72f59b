"""A small CNN classifier whose penultimate layer is the feature space of FID on MNIST-like data.

Inception-v3 features are meaningless on 28×28 digits and far too slow for scoring every trial
on a CPU; a classifier trained on the data itself is the usual substitute. The network sees
28×28 input with the channels of the data it was trained on: other sizes are resized by
:func:`prepare_input`, so generators of any resolution are scored in the same feature space. A
classifier for RGB data sees all three channels (a gray copy of colour images must not look
like them); one for gray data sees luma.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ganhpo.data import ImageDataset, to_unit_range
from ganhpo.errors import ExtractorError

__all__ = [
    "FEATURE_DIM",
    "INPUT_SIZE",
    "ClassifierNet",
    "classifier_accuracy",
    "load_classifier",
    "prepare_input",
    "serialize_classifier",
    "train_classifier",
]

logger = logging.getLogger(__name__)

INPUT_SIZE = 28  # the network's input side; everything else is resized to it
FEATURE_DIM = 128  # width of the penultimate layer, the FID feature space
# ITU-R 601-2 luma, the weights ganhpo.data uses to turn RGB into gray: an RGB copy of a gray
# dataset then has exactly the gray dataset's features.
_LUMA = (0.299, 0.587, 0.114)


class ClassifierNet(nn.Module):
    """conv16 → pool → conv32 → pool → conv64 → pool → fc128 (features) → logits.

    Sized for CPUs: about 100k parameters (a 400 kB file), 0.1 ms per image to extract features
    on two cores, and 99 % test accuracy on MNIST after three epochs. The 3×3×64 map before the
    fully connected layer keeps where strokes are, which the features should see. Batch norm
    makes a few epochs enough.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.body = nn.Sequential(
            _conv_block(in_channels, 16),  # 28×28
            nn.MaxPool2d(2),
            _conv_block(16, 32),  # 14×14
            nn.MaxPool2d(2),
            _conv_block(32, 64),  # 7×7
            nn.MaxPool2d(2),  # 3×3
            nn.Flatten(),
        )
        self.fc = nn.Linear(64 * 3 * 3, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [N, 128] (after the ReLU) of prepared [N, C, 28, 28] input."""
        return F.relu(self.fc(self.body(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_classes] of prepared [N, C, 28, 28] input."""
        return self.head(self.features(x))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


def prepare_input(images: torch.Tensor, channels: int = 1) -> torch.Tensor:
    """Float images [N, C, H, W] in [-1, 1] (C = 1 or 3) as a network's [N, channels, 28, 28]
    input.

    For a gray network (``channels=1``) RGB becomes gray with luma weights; for an RGB network
    gray images are repeated to three channels, as pytorch-fid does for Inception. Other sizes
    are resized bilinearly (antialiased when shrinking). Raises ExtractorError on other shapes.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ExtractorError(
            "the classifier extractor takes images of shape [N, 1 or 3, H, W]; "
            f"got {tuple(images.shape)}"
        )
    x = images.to(torch.float32)
    if channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif channels == 1 and x.shape[1] == 3:
        luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * luma).sum(dim=1, keepdim=True)
    h, w = x.shape[-2:]
    if (h, w) != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(
            x,
            size=(INPUT_SIZE, INPUT_SIZE),
            mode="bilinear",
            align_corners=False,
            antialias=min(h, w) > INPUT_SIZE,
        )
    return x


def train_classifier(
    dataset: ImageDataset,
    test_dataset: ImageDataset,
    *,
    epochs: int = 3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
    lr: float = 2e-3,
) -> tuple[ClassifierNet, float]:
    """Train a :class:`ClassifierNet` on a labelled dataset; returns (model in eval mode, accuracy).

    The accuracy (a fraction) is measured on ``test_dataset``. Weights and batch order come from
    ``seed``. Adam with a learning rate decaying linearly to zero over ``epochs``; no
    augmentation. Raises ExtractorError when either dataset has no labels.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs}, {batch_size}")
    for ds in (dataset, test_dataset):
        if ds.labels is None:
            raise ExtractorError(
                f"dataset {ds.name!r} ({ds.split}) has no labels, so no classifier can be "
                "trained on it; use another feature extractor (e.g. 'inception')"
            )
    assert dataset.labels is not None and test_dataset.labels is not None
    num_classes = int(max(dataset.labels.max(), test_dataset.labels.max())) + 1
    channels = int(dataset.images.shape[1])
    # Seed the initial weights without touching the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClassifierNet(num_classes, in_channels=channels).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(dataset) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 - step / (epochs * steps_per_epoch)
    )
    order_rng = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(dataset), generator=order_rng)
        total_loss = 0.0
        for start in range(0, len(dataset), batch_size):
            index = order[start : start + batch_size]
            x = prepare_input(to_unit_range(dataset.images[index].to(device)), channels)
            y = dataset.labels[index].to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(index)
        logger.info(
            "classifier epoch %d/%d: loss %.4f (%.0f s)",
            epoch + 1,
            epochs,
            total_loss / len(dataset),
            time.perf_counter() - started,
        )
    model.eval()
    accuracy = classifier_accuracy(model, test_dataset, device=device)
    logger.info("classifier test accuracy: %.4f", accuracy)
    return model, accuracy


@torch.no_grad()
def classifier_accuracy(
    model: ClassifierNet,
    dataset: ImageDataset,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 1000,
) -> float:
    """The fraction of ``dataset``'s images that ``model`` (in eval mode) labels correctly."""
    if dataset.labels is None:
        raise ExtractorError(f"dataset {dataset.name!r} has no labels to measure accuracy on")
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(dataset), batch_size):
        images = dataset.images[start : start + batch_size].to(device)
        x = prepare_input(to_unit_range(images), model.in_channels)
        predicted = model(x).argmax(dim=1).cpu()
        correct += int((predicted == dataset.labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / len(dataset)


def serialize_classifier(model: ClassifierNet) -> bytes:
    """The float32 CPU state_dict of ``model`` as the bytes of a ``torch.save`` file.

    Saved through a buffer, not a path: torch.save records the file's name inside the archive,
    and the bytes (hence the digest) must not depend on where they are written.
    """
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_classifier(path: str | Path) -> tuple[ClassifierNet, str]:
    """A :class:`ClassifierNet` (eval mode, CPU) from a state_dict file, and the file's sha256."""
    path = Path(path)
    try:
        data = path.read_bytes()
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = ClassifierNet(
            num_classes=state["head.weight"].shape[0],
            in_channels=state["body.0.0.weight"].shape[1],
        )
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, AttributeError, EOFError, pickle.UnpicklingError) as e:
        raise ExtractorError(
            f"cannot load classifier weights from {path} ({e}); delete the file to retrain it, "
            "or reinstall ganhpo if it is the shipped MNIST classifier"
        ) from e
    model.eval()
    return model, hashlib.sha256(data).hexdigest()
