"""The images' share of a vision-language run's peak memory. Torch-free: config.json, the saved
processor's settings, the data's first rows and the images' headers (Pillow reads the size only).

A micro-batch's images become patches: a Qwen-VL tower takes each image at its own size (rounded to
28-pixel cells, within the processor's pixel budget and data.max_image_pixels), the others at a fixed
size per image or per tile. What the patches cost at the peak depends on lora.vision:

  none       the tower and projector are frozen and run without autograd (engine/vision/loading's
             input_grads_to_the_text_only): their activations are freed before the language model's
             forward (a transient, not at the peak); the batch's pixel values stay allocated;
  projector  the projector's input and its hidden values are kept for its LoRA's backward;
  all        the tower's blocks are checkpointed like the decoder's: their inputs stay allocated
             through the language model's pass (on the GPU, or in host memory in lean mode; a block
             is recomputed only after the language model's backward pass, when its activations are
             gone), or the blocks are kept whole in memory mode none.

The image tokens themselves are positions of the language model's rows: seq_len counts them already.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lorastudio.core.models.vision import vision_family

QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
PREVIEW_IMAGES = 32             # rows of the data read for their images


@dataclass(frozen=True)
class Tower:
    """A vision tower's dimensions and how it cuts an image into patches."""
    width: int
    intermediate: int
    layers: int
    gated: bool                 # SwiGLU blocks (Qwen2.5-VL) rather than a two-layer GELU MLP
    patch: int
    merge: int                  # patches per language-model token, along each side
    values_per_patch: int       # pixel values (channels × temporal frames × patch²)
    fixed_patches: int          # patches per image or tile at a fixed size (0: at the image's own size)
    tiles: int                  # tiles per image at most (1 + splits), for fixed-size towers
    budget: int                 # the processor's largest image in pixels (native-size towers; 0: none)


def _int(cfg: dict, *keys: str, default: int = 0) -> int:
    for key in keys:
        value = cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def processor_settings(folder) -> dict:
    """The image processor's saved settings (processor_config.json's image_processor, or the older
    preprocessor_config.json); {} where there are none."""
    folder = Path(folder)
    for name, key in (("processor_config.json", "image_processor"), ("preprocessor_config.json", None)):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        settings = data.get(key) if key else data
        if isinstance(settings, dict) and settings:
            return settings
    return {}


def tower_of(info) -> Tower | None:
    """The vision tower of a vision-language model known to us (None for a text-only model)."""
    if vision_family(info) is None:
        return None
    cfg = info.config.get("vision_config") or {}
    proc = processor_settings(info.path) if getattr(info, "path", None) else {}
    size = proc.get("size") if isinstance(proc.get("size"), dict) else {}
    qwen = info.model_type in QWEN_TYPES
    width = _int(cfg, "embed_dim", "hidden_size") if info.model_type == "qwen2_vl" else _int(cfg, "hidden_size")
    mlp_ratio = cfg.get("mlp_ratio") if isinstance(cfg.get("mlp_ratio"), (int, float)) else 4
    intermediate = _int(cfg, "intermediate_size") or int(width * mlp_ratio)
    patch = _int(cfg, "patch_size", default=14)
    channels = _int(cfg, "in_channels", "num_channels", "in_chans", default=3)
    if qwen:
        temporal = _int(cfg, "temporal_patch_size", default=2)
        budget = _int(proc, "max_pixels") or _int(size, "longest_edge") or 12845056
        return Tower(width, intermediate, _int(cfg, "depth", "num_hidden_layers"), gated=info.model_type != "qwen2_vl",
                     patch=patch, merge=_int(cfg, "spatial_merge_size", default=2),
                     values_per_patch=channels * temporal * patch * patch, fixed_patches=0, tiles=1, budget=budget)
    image = _int(cfg, "image_size", default=224)
    per_side = image // max(patch, 1)
    tiles = 1
    if info.model_type in ("idefics3", "smolvlm") and proc.get("do_image_splitting", True):
        edge, tile = _int(size, "longest_edge"), _int(proc.get("max_image_size") or {}, "longest_edge")
        if edge and tile:
            tiles = -(-edge // tile) ** 2 + 1                   # the splits and the global image
    elif info.model_type == "mllama":
        tiles = _int(proc, "max_image_tiles") or _int(cfg, "max_num_tiles", default=4)
    elif info.model_type == "llava_next":
        pinpoints = info.config.get("image_grid_pinpoints") or []
        tiles = 1 + max(((h // image) * (w // image) for h, w in pinpoints if image), default=4)
    layers = _int(cfg, "num_hidden_layers", "depth") + _int(cfg, "num_global_layers")
    return Tower(width, intermediate, layers, gated=False, patch=patch, merge=1, values_per_patch=channels * patch * patch,
                 fixed_patches=per_side * per_side + (1 if "clip" in str(cfg.get("model_type", "")) else 0),
                 tiles=tiles, budget=0)


def patches_per_image(tower: Tower, pixels: int) -> int:
    """Patches the tower makes of an image of `pixels` pixels (already within data.max_image_pixels)."""
    if tower.fixed_patches:
        return tower.fixed_patches * tower.tiles
    cell = tower.patch * tower.merge
    pixels = min(max(pixels, cell * cell), tower.budget or pixels)
    cells = max(1, round(pixels / (cell * cell)))      # the processor rounds each side to whole cells
    return cells * tower.merge * tower.merge


@dataclass(frozen=True)
class ImageLoad:
    """The data's images as the estimate takes them: the most in one example, the largest's pixels."""
    images: int
    pixels: int
    words: str


_LOADS: dict[tuple, ImageLoad] = {}


def image_load(data_path: str, max_pixels: int = 0, rows: int = PREVIEW_IMAGES) -> ImageLoad | None:
    """Images per example and the largest image's pixels (scaled to `max_pixels` when that is set),
    from the first `rows` rows of a local data file (0 images: none there); None when it cannot be read.
    Remembered per file and modification time (the window estimates at every change of the form)."""
    from lorastudio.core.data.files import preview_rows
    from lorastudio.core.data.images import resolve_paths, row_image_count, row_images
    path = Path(data_path) if data_path else None
    try:
        stamp = os.stat(path).st_mtime_ns if path is not None and path.is_file() else None
    except OSError:
        stamp = None
    if stamp is None:
        return None
    key = (str(path), stamp, max_pixels, rows)
    if key in _LOADS:
        return _LOADS[key]
    try:
        values = [row.value for row in preview_rows(path, rows) if isinstance(row.value, dict)]
    except Exception:          # noqa: BLE001 — the data's own check names what is wrong with it
        return None
    most = max((row_image_count(v) for v in values), default=0)
    largest = 0
    for value in values if most else ():
        for ref in resolve_paths(row_images(value), path.parent):
            largest = max(largest, _pixels(ref))
    if most and not largest:
        return None                                 # images named but none readable: the data check says why
    if max_pixels:
        largest = min(largest, max_pixels)
    size = f"{largest / 1e6:.2f} MP" if largest >= 10_000 else f"{largest:,} pixels"
    words = (f"{most} image{'s' if most > 1 else ''} an example, the largest {size} (first {len(values)} rows)"
             if most else f"no images in the first {len(values)} rows")
    load = ImageLoad(most, largest, words)
    if len(_LOADS) > 32:
        _LOADS.clear()
    _LOADS[key] = load
    return load


def _pixels(ref: str) -> int:
    try:
        from PIL import Image
        with Image.open(ref) as img:
            w, h = img.size
        return w * h
    except Exception:          # noqa: BLE001 — a missing image is the data check's to report
        return 0


def block_elements(tower: Tower, r: int, adapted: bool) -> float:
    """Values one vision block keeps per patch for its backward: the norms' inputs and outputs, qkv,
    q and k after rotary, the attention's output and proj's input; the MLP's input, norm, and its
    hidden values (gate, up, act, product for SwiGLU; fc1's output and the GELU's for the others);
    LoRA's A and B inputs for its 6 (gated: 7) linear layers."""
    w, i = tower.width, tower.intermediate
    attention = 2 * w + 3 * w + 2 * w + 2 * w
    mlp = 2 * w + (4 * i if tower.gated else 2 * i)
    lora = (7 if tower.gated else 6) * 2 * r if adapted else 0
    return attention + mlp + lora


def vision_bytes(tower: Tower, patches: int, vision: str, mode: str, r: int, act_bytes: int) -> tuple[int, str]:
    """Bytes the micro-batch's `patches` keep at the peak, and how that was counted."""
    pixel_values = patches * tower.values_per_patch * 4            # the processor's fp32 pixel values
    how = f"{patches:,} patches: pixel values {patches:,} × {tower.values_per_patch:,} × 4 B"
    if vision == "none":
        return pixel_values, how + " (the frozen tower keeps nothing for the backward pass)"
    merged = patches / (tower.merge * tower.merge)
    projector = (patches * tower.width * 2 + merged * tower.width * tower.merge ** 2 * 2) * act_bytes
    how += f"; the projector's input and hidden values {patches:,} × {4 * tower.width:,} × {act_bytes} B"
    if vision == "projector":
        return int(pixel_values + projector), how
    if mode == "none":
        block = block_elements(tower, r, True) * patches * act_bytes
        tower_bytes = tower.layers * block
        how += f"; {tower.layers} vision blocks × {block_elements(tower, r, True):,.0f} values/patch"
    else:       # the blocks' inputs, through the language model's pass; a block is recomputed only after it
        kept = tower.layers if mode == "checkpoint" else min(tower.layers, 2)
        tower_bytes = kept * patches * tower.width * act_bytes
        how += f"; {kept} vision block inputs × {tower.width:,}"
    return int(pixel_values + projector + tower_bytes), how


def micro_batch_patches(tower: Tower, load: ImageLoad | None, batch: int, seq_len: int) -> tuple[int, str]:
    """Patches in the largest micro-batch (images are never packed: one example a row), and how that
    was found. Unread data counts one image at the processor's budget; either way no more image
    tokens than a row has positions."""
    if load is None:
        images, pixels, words = 1, tower.budget, "up to: 1 image an example at the processor's largest size"
    else:
        images, pixels, words = load.images, load.pixels, load.words
    per_row = min(images * patches_per_image(tower, pixels), seq_len * tower.merge * tower.merge)
    return batch * per_row, words
