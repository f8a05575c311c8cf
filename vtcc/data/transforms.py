"""Batched augmentations on tensors (kornia), run after the batch reaches its device.

Each view draws its own random parameters per image; inputs are uint8 ``(B, C, h, w)``,
outputs float ``(B, C, S, S)`` normalised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import kornia.augmentation as K
import torch
from torch import nn

from vtcc.errors import ConfigError
from vtcc.registry import register

Interpolation = Literal["bilinear", "bicubic", "nearest"]  # kornia's resampling modes


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


# hflip_p / invert_p: auto: flips when the data's mirror images look like its images, inversion
# when its inverted images do (vtcc.config.data_defaults)
# strong_view_base: self-labelling after a run of this view keeps it under Cutout as its strong view
@register(
    "view",
    "small_image",
    target="vtcc.data.small_image_view",
    auto=("hflip_p", "invert_p"),
    strong_view_base=True,
)
def small_image_view(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_scale: Sequence[float] = (0.6, 1.0),
    crop_ratio: Sequence[float] = (0.8, 1.25),
    rotation: float = 15.0,
    translate: float = 0.1,
    shear: float = 10.0,
    affine_p: float = 0.8,
    brightness: float = 0.3,
    contrast: float = 0.3,
    noise_std: float = 0.05,
    noise_p: float = 0.5,
    hflip_p: float = 0.0,
    invert_p: float = 0.0,
) -> nn.Sequential:
    """A view for small grayscale images such as digits: no flips by default, which would change
    their meaning; ``hflip_p`` for images whose mirror image is one of their kind (silhouettes,
    shapes). ``invert_p``: gray levels inverted (``1 - x``, before the affine step, whose border
    stays black), for data that holds both polarities (pictograms dark on light and light on dark).
    An op of probability 0 is left out, so its random draws never shift the others'."""
    for key, value in (("hflip_p", hflip_p), ("invert_p", invert_p)):
        if not isinstance(value, int | float):
            raise ConfigError(
                f"augment.view_a.{key}={value!r}: a probability (auto is decided only under augment=auto)"
            )
    flip = [K.RandomHorizontalFlip(p=hflip_p)] if hflip_p > 0 else []
    invert = [K.RandomInvert(max_val=1.0, p=invert_p)] if invert_p > 0 else []
    return nn.Sequential(
        K.RandomResizedCrop((image_size, image_size), scale=tuple(crop_scale), ratio=tuple(crop_ratio)),
        *flip,
        *invert,
        K.RandomAffine(degrees=rotation, translate=(translate, translate), shear=shear, p=affine_p),
        K.RandomBrightness((1 - brightness, 1 + brightness)),
        K.RandomContrast((1 - contrast, 1 + contrast)),
        K.RandomGaussianNoise(std=noise_std, p=noise_p),
        K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)),
    )


@register(
    "augmentation",
    "twin_view",
    target="vtcc.data.TwinViewAugmentation",
    extra_keys={"family": Literal["auto"]},  # augment=auto's marker (vtcc.config.data_defaults)
)
class TwinViewAugmentation(nn.Module):
    """Two independently augmented views of one batch, as Contrastive Clustering trains on."""

    def __init__(self, view_a: nn.Module, view_b: nn.Module | None = None) -> None:
        super().__init__()
        self.view_a = view_a
        self.view_b = view_a if view_b is None else view_b

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = _to_float(images)
        return self.view_a(images), self.view_b(images)

    @torch.no_grad()
    def one_view(self, images: torch.Tensor) -> torch.Tensor:
        """One augmented view (the first recipe), e.g. of an image and, apart, of its neighbour."""
        return self.view_a(_to_float(images))

    @torch.no_grad()
    def per_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same recipe one image at a time, as DataLoader workers run it on the CPU."""
        views = [self(image[None]) for image in images]
        return torch.cat([a for a, _ in views]), torch.cat([b for _, b in views])


def blur_kernel_size(sigma_max: float) -> int:
    """Odd kernel reaching 3 sigma on each side: PIL's ``GaussianBlur(radius=sigma)`` (VTCC's)
    has no fixed size, so the kernel follows sigma, not the image size."""
    return 2 * math.ceil(3 * sigma_max) + 1


@register("view", "rgb", target="vtcc.data.rgb_view")
def rgb_view(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_scale: Sequence[float] = (0.08, 1.0),
    hflip_p: float = 0.5,
    hflip_last: bool = False,
    color_jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
    color_jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: float = 0.0,
    blur_sigma: Sequence[float] = (0.1, 2.0),
    blur_kernel: int | None = None,
    solarize_p: float = 0.0,
) -> nn.Sequential:
    """One view of natural RGB images: the ops of SimCLR, MoCo v3 and Contrastive Clustering.

    Order: crop, flip, colour jitter, grayscale, blur, solarize, normalise (Contrastive
    Clustering's). ``hflip_last`` moves the flip after blur and solarize, as VTCC's
    ``transform.py`` has it. ``blur_kernel`` null: :func:`blur_kernel_size` of the largest sigma.
    """
    if len(mean) != 3:
        raise ConfigError(
            f"this augmentation's colour jitter and grayscale need colour images, and the data is "
            f"normalised with {len(mean)} channel(s): use augment=small for gray images, or data.in_chans=3"
        )
    brightness, contrast, saturation, hue = color_jitter
    flip = K.RandomHorizontalFlip(p=hflip_p)
    ops: list[nn.Module] = [K.RandomResizedCrop((image_size, image_size), scale=tuple(crop_scale))]
    if not hflip_last:
        ops.append(flip)
    ops += [
        K.ColorJitter(brightness, contrast, saturation, hue, p=color_jitter_p),
        K.RandomGrayscale(p=grayscale_p),
    ]
    if blur_p > 0:
        size = blur_kernel or blur_kernel_size(max(blur_sigma))
        ops.append(K.RandomGaussianBlur((size, size), tuple(blur_sigma), p=blur_p))
    if solarize_p > 0:  # PIL's ImageOps.solarize: values >= 128 inverted (kornia: >= 0.5)
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize_p))
    if hflip_last:
        ops.append(flip)
    ops.append(K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)))
    return nn.Sequential(*ops)


# SCAN's strong augmentation (data/augment.py): 4 ops drawn with replacement per image from 14
# (Identity among them), each at a uniform random magnitude, then Cutout. Here each kornia op applies
# per image with the probability SCAN gives it, 1 - (13/14)^4 = 0.257 for 4 draws.
RANDAUGMENT_OPS = 14


# base and hflip_p: auto follow the run self-labelling starts from (vtcc.config.init_from)
@register("view", "strong", target="vtcc.data.strong_view", auto=("hflip_p", "base"))
def strong_view(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    num_ops: int = 4,
    hflip_p: float = 0.5,
    cutout_scale: Sequence[float] = (0.02, 0.25),
    base: nn.Module | None = None,
) -> nn.Sequential:
    """SCAN's strong view (self-labelling): flip, RandAugment-style ops, normalise, Cutout.

    ``base``: another view recipe (with its own normalisation) instead of the flip and the ops,
    then Cutout: e.g. the small-image recipe a digits run trained with, since SCAN's ops
    (solarize, equalize, posterize, ...) measured worse than it on 16 px digits (README).

    kornia ops drawn per image (kornia's ``RandAugment`` picks one set of ops per batch): auto
    contrast, equalize, rotate (30 deg), solarize, saturation (colour images), contrast, brightness,
    sharpness (0.05-0.95), shear x / y (0.1, i.e. 5.7 deg), translate x / y (10 %), posterize (4-8 bits).
    Cutout: a square of up to half the side (``cutout_scale`` of the area) set to 0 after normalising.
    """
    cutout = K.RandomErasing(scale=tuple(cutout_scale), ratio=(1.0, 1.0), value=0.0, p=1.0)
    if base is not None:
        return nn.Sequential(base, cutout)
    if not isinstance(hflip_p, int | float):
        raise ConfigError(
            f"augment.view_b.hflip_p={hflip_p!r}: 'auto' is decided from init_from's run; "
            "give a number (0 or 0.5)"
        )
    p = 1 - (1 - 1 / RANDAUGMENT_OPS) ** num_ops
    shear = math.degrees(math.atan(0.1))
    ops: list[nn.Module] = [
        K.Resize((image_size, image_size), antialias=True),
        K.RandomHorizontalFlip(p=hflip_p),
        K.RandomAutoContrast(p=p),
        K.RandomEqualize(p=p),
        K.RandomRotation(degrees=30.0, p=p),
        K.RandomSolarize(thresholds=0.5, additions=0.0, p=p),
    ]
    if len(mean) == 3:
        ops.append(K.RandomSaturation(saturation=(0.05, 0.95), p=p))
    ops += [
        K.RandomContrast(contrast=(0.05, 0.95), p=p),
        K.RandomBrightness(brightness=(0.05, 0.95), p=p),
        K.RandomSharpness(sharpness=(0.05, 0.95), p=p),
        K.RandomShear(shear=(-shear, shear, 0.0, 0.0), p=p),
        K.RandomShear(shear=(0.0, 0.0, -shear, shear), p=p),
        K.RandomTranslate(translate_x=(-0.1, 0.1), translate_y=(0.0, 0.0), p=p),
        K.RandomTranslate(translate_x=(0.0, 0.0), translate_y=(-0.1, 0.1), p=p),
        K.RandomPosterize(bits=(4.0, 8.0), p=p),
        K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)),
        cutout,
    ]
    return nn.Sequential(*ops)


@register("view", "eval", target="vtcc.data.EvalTransform")
class EvalTransform(nn.Module):
    """Deterministic resize and normalisation, for evaluation and prediction."""

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: Interpolation = "bilinear",
    ) -> None:
        super().__init__()
        self.view = nn.Sequential(
            K.Resize((image_size, image_size), resample=interpolation.upper(), antialias=True),
            K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)),
        )

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.view(_to_float(images))
