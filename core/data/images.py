"""Images in chat data: where a row names them, where they sit in the conversation, and reading
them. Torch-free (Pillow only).

Three spellings are read, and may be combined in one row:
  content parts    {"role": "user", "content": [{"type": "image", "image": "cat.png"},
                                                {"type": "text", "text": "What is this?"}]}
                   (an image part may say "image", "path", "url" or "image_url": {"url": ...}; a part
                   {"type": "image"} without a path takes the next entry of the `images` column)
  an images column {"images": ["a.png", "b.png"], "messages": [... "<image>" markers in user turns ...]}
  ShareGPT / LLaVA {"image": "a.png", "conversations": [{"from": "human", "value": "<image>\\n..."}, ...]}
Everywhere below an image's place in a turn is the marker IMAGE_MARKER inside the text, and the
example's `images` lists the files in marker order. Without any marker the images go in front of
the first user turn (LLaVA's convention). Paths are relative to the data file's folder.

Only the encoder of a vision-language model reads the files (core/engine/vision/); a text-only
model refuses an example with images, naming it (`text_only_error`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from lorastudio.core.data.files import DataError

IMAGE_MARKER = "<image>"
IMAGE_COLUMNS = ("images", "image")          # the row fields that list an example's images
_PART_PATH_KEYS = ("image", "path", "url", "image_url", "file")


def is_image_part(part) -> bool:
    return isinstance(part, dict) and part.get("type") in ("image", "image_url")


def _part_path(part: dict) -> str | None:
    for key in _PART_PATH_KEYS:
        value = part.get(key)
        if is_stored_image(value):
            return stored_image_path(value)
        if isinstance(value, dict):
            value = value.get("url") or value.get("path")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def is_stored_image(value) -> bool:
    """An image held in the data itself: datasets' Image feature as Parquet / Arrow store it
    ({"bytes": ..., "path": ...}) or as it decodes it (a PIL image)."""
    if isinstance(value, dict) and isinstance(value.get("bytes"), (bytes, bytearray)):
        return True
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save")


def image_store() -> Path:
    """Where images held in data files are written as files (by their content), beside the token
    cache: $LORASTUDIO_CACHE/images or the user cache folder's."""
    import os
    if os.environ.get("LORASTUDIO_CACHE"):
        return Path(os.environ["LORASTUDIO_CACHE"]) / "images"
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("lorastudio", appauthor=False)) / "images"


def stored_image_path(value) -> str:
    """The file an image held in the data is written to, named by its bytes' digest (written once;
    the processor and the token cache then treat it like any image file)."""
    if isinstance(value, dict):
        data = bytes(value["bytes"])
    else:
        import io
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        data = buffer.getvalue()
    path = image_store() / f"{hashlib.blake2b(data, digest_size=16).hexdigest()}.img"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        from lorastudio.core.atomic_files import atomic_write_bytes
        atomic_write_bytes(path, data)
    return str(path)


def flatten_parts(parts: list, where: str, source: str, label: str) -> tuple[str, list[str | None]]:
    """A content list → (its text with IMAGE_MARKER where each image is, the images' paths in order;
    None for a part that names no file, filled from the `images` column)."""
    texts, refs = [], []
    for j, part in enumerate(parts, start=1):
        if isinstance(part, str):
            texts.append(part)
        elif is_image_part(part):
            texts.append(IMAGE_MARKER)
            refs.append(_part_path(part))
        elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise DataError(f"{source}, {where}: {label} part {j} is neither text ({{\"type\": \"text\", "
                            f"\"text\": ...}}) nor an image ({{\"type\": \"image\", \"image\": PATH}})",
                            "fix that part, or set data.on_bad_rows: skip")
    return "".join(texts), refs


def column_images(value: dict, where: str, source: str) -> list[str]:
    """The paths listed by a row's `images` (a list or one path) or `image` field; [] if none."""
    for key in IMAGE_COLUMNS:
        if key not in value or value[key] is None:
            continue
        items = value[key] if isinstance(value[key], list) else [value[key]]
        items = [i["path"] if isinstance(i, dict) and not is_stored_image(i) and isinstance(i.get("path"), str)
                 else i for i in items]        # datasets' Image feature holding a path only
        if not all((isinstance(i, str) and i.strip()) or is_stored_image(i) for i in items):
            raise DataError(f"{source}, {where}: field '{key}' must hold image paths (text) or images, found "
                            f"{', '.join(sorted({type(i).__name__ for i in items}))}",
                            "give each image as a path relative to the data file, or set data.on_bad_rows: skip")
        return [stored_image_path(i) if is_stored_image(i) else i.strip() for i in items]
    return []


def place_images(messages: list[dict], part_refs: list[str | None], column: list[str], where: str,
                 source: str) -> list[str]:
    """Check that the markers and the images agree and return the images in marker order; images with
    no marker at all are put in front of the first user turn (`messages` is changed in place)."""
    if any(IMAGE_MARKER in m["content"] for m in messages if m["role"] == "assistant"):
        raise DataError(f"{source}, {where}: an assistant turn holds an image; images belong in the user's turns",
                        "move the image into the user turn before the answer")
    pending = list(column)
    images = []
    for ref in part_refs:
        if ref is None:
            if not pending:
                raise DataError(f"{source}, {where}: an image part names no file and the row has no "
                                "'images' entry left for it", 'give the part a path ({"type": "image", '
                                '"image": "cat.png"}) or list the file in the row\'s "images" field')
            ref = pending.pop(0)
        images.append(ref)
    markers = sum(m["content"].count(IMAGE_MARKER) for m in messages)
    from_parts = len(part_refs)
    text_markers = markers - from_parts
    if pending and text_markers == 0:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise DataError(f"{source}, {where}: the row has images but no user turn to put them in",
                            "add the user's question about the image")
        first_user["content"] = IMAGE_MARKER * len(pending) + "\n" + first_user["content"]
        text_markers = len(pending)
    if text_markers != len(pending):
        raise DataError(f"{source}, {where}: the conversation has {markers} {IMAGE_MARKER} place(s) but "
                        f"{len(images) + len(pending)} image(s)",
                        f"put one {IMAGE_MARKER} in the user's text where each image of the 'images' field goes, "
                        "in order (or none: then they all go before the first question)")
    if text_markers and from_parts:
        # Both spellings in one row: markers in plain text take the column's images, in reading order.
        raise DataError(f"{source}, {where}: the row mixes {IMAGE_MARKER} markers in its text with image "
                        "content parts", "use one spelling per row: content parts, or markers + an 'images' field")
    return images + pending


def resolve_paths(images: list[str], base: Path | None) -> list[str]:
    """Paths relative to the data file's folder become absolute; absolute ones stay."""
    out = []
    for ref in images:
        path = Path(ref.removeprefix("file://")).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        out.append(str(path))
    return out


def text_only_error(source: str, where: str, count: int, model: str) -> DataError:
    return DataError(f"{source}, {where}: this example has {count} image(s), but {model} is a text-only model "
                     "(its config.json names no vision tower)",
                     "train a vision-language model (Qwen2-VL / Qwen2.5-VL / Qwen3-VL, SmolVLM / Idefics3, LLaVA, "
                     "Pixtral, Gemma 3, Llama 3.2 Vision) on this "
                     "data, or remove the images from it")


def open_image(path: str, where: str, source: str, max_pixels: int = 0):
    """The image at `path` as RGB, scaled down (shape kept) to at most `max_pixels` pixels when that
    is set; a DataError naming the row and the file when it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{source}, {where}: image {path} does not exist",
                        "check the path (relative paths start at the data file's folder), or set "
                        "data.on_bad_rows: skip")
    try:
        with Image.open(file) as img:
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{source}, {where}: image {path} cannot be read ({type(exc).__name__}: {exc})",
                        "replace the file with a PNG, JPEG or WebP image, or remove it from the row") from None
    return fit_pixels(rgb, max_pixels)


def fit_pixels(image, max_pixels: int):
    """`image` scaled down to at most `max_pixels` pixels, its aspect ratio kept (0: unchanged)."""
    w, h = image.size
    if not max_pixels or w * h <= max_pixels:
        return image
    scale = (max_pixels / (w * h)) ** 0.5
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    while size[0] * size[1] > max_pixels:           # rounding may leave it a pixel over
        size = (max(1, size[0] - 1), size[1]) if size[0] >= size[1] else (size[0], max(1, size[1] - 1))
    from PIL import Image
    return image.resize(size, Image.Resampling.BICUBIC)


def images_digest(paths) -> str:
    """A digest of the images' bytes (in order): the token cache's key includes it, so a replaced
    image re-tokenizes however its name stayed."""
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        digest.update(str(path).encode() + b"\0")
        try:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError:
            digest.update(b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()


def row_image_count(value: dict) -> int:
    """How many images a raw row names (its images/image field and image content parts), unchecked."""
    count = sum(len(v) if isinstance(v, list) else 1 for k in IMAGE_COLUMNS if (v := value.get(k)))
    for key in ("messages", "conversations"):
        for turn in value.get(key) or []:
            content = turn.get("content", turn.get("value")) if isinstance(turn, dict) else None
            if isinstance(content, list):
                count += sum(1 for part in content if is_image_part(part))
    return count



def row_images(value: dict) -> list[str]:
    """The images a raw row names (its images/image field, then its image content parts that give a
    path), unchecked and unresolved; images held in the data are written to the image store (I/O:
    off the GUI thread). For a preview's thumbnails."""
    refs = []
    for key in IMAGE_COLUMNS:
        items = value.get(key)
        for item in items if isinstance(items, list) else [items] if items is not None else []:
            if is_stored_image(item):
                refs.append(stored_image_path(item))
            elif isinstance(item, dict) and isinstance(item.get("path"), str):
                refs.append(item["path"])
            elif isinstance(item, str) and item.strip():
                refs.append(item.strip())
    for key in ("messages", "conversations"):
        for turn in value.get(key) or []:
            content = turn.get("content", turn.get("value")) if isinstance(turn, dict) else None
            for part in content if isinstance(content, list) else []:
                if is_image_part(part) and (ref := _part_path(part)):
                    refs.append(ref)
    return refs
