"""A vision-language model as GGUF (issue 31): the language model in one file, the vision tower and
projector in the separate `mmproj` file llama.cpp's mtmd loads (both written by llama.cpp's converter:
hf_converter.py), and the check that both load in llama.cpp and answer with an image.

The image check: llama.cpp (both files) answers the question beside the training data's first image
(or, without one, a small drawing and CHECK_PROMPT), greedy, and transformers' base + adapter answers
the same with the processor. llama.cpp resizes and normalizes images itself (clip.cpp), so the two
need not agree token for token; the answers are reported, and a request llama.cpp refuses is said in
words (`image_problem`), not hidden. llama.cpp is asked in a child process that ends at a timeout
(llama_check.image_answers): a server with an Idefics3 mmproj once hung the export in CI on closing,
which nothing in the export's own process could end. A dynamic-resolution tower (Qwen2-VL,
Qwen2.5-VL) sees an image at as many tokens as its budget allows, and llama.cpp's budget is its own, not the processor's (the
converter does not carry min/max_pixels): the check gives llama.cpp the number of image tokens the
processor made (`image_max_tokens`, llama.cpp's --image-max-tokens), which the README repeats, or a
model trained at a small budget reads a large image it never saw (measured on the tiny receipts demo:
garbage at llama.cpp's own budget, the trained JSON at the processor's). Within the budget llama.cpp
also sizes the image its own way (not as the processor, which stretches it to whole patches), so
the check hands it the image at the size the processor made (`sized_image`; Pixtral's too, whose
processor stretches the image to whole patches: llama.cpp's own sizing gave the tiny one 15 image
tokens where the processor made 12): the pair of files is judged, not the resizing (on the tiny demo: 16 of 16 held-out receipts read right at the
processor's size, 3 of 16 from the raw image; docs/vision.md).
"""
from __future__ import annotations

from pathlib import Path

from lorastudio.core.engine.gguf.llama_check import IMAGE_TIMEOUT_S, image_answers, reference_answer

CHECK_PROMPT = "Describe this image."
IMAGE_NEW_TOKENS = 48                   # enough for a line of JSON
DYNAMIC_RESOLUTION = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
# llama.cpp's mtmd opens Idefics3 / SmolVLM's overview image with the token "\n\n", looked up by its text
# (tools/mtmd/mtmd.cpp, PROJECTOR_TYPE_IDEFICS3): a vocabulary without it (real ones have it) gets a
# null token there, which llama.cpp's server refuses as "Invalid token". Said in words when it happens.
PARAGRAPH_TOKEN = ("idefics3", "smolvlm")


def drawn_image(folder: Path) -> Path:
    """A small PNG with a few coloured shapes, for a check when the data shows no image."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (64, 48), (240, 240, 235))
    draw = ImageDraw.Draw(img)
    draw.rectangle([4, 4, 30, 26], fill=(200, 40, 40))
    draw.ellipse([34, 14, 60, 42], fill=(40, 80, 200))
    path = Path(folder) / "check-image.png"
    img.save(path)
    return path


def reference_image_answer(model, processor, image: Path, prompt: str, n: int = IMAGE_NEW_TOKENS,
                           max_pixels: int = 0, sized: Path | None = None) -> tuple[str, int]:
    """(transformers' greedy answer, base + adapter before merging, to `prompt` about `image` through
    the processor's chat template, as llama.cpp would show it; the image tokens the processor made).
    `max_pixels`: data.max_image_pixels, as training scaled its images. `sized`: where to save the
    image at the size a dynamic-resolution processor made of it (its patch grid), for llama.cpp."""
    import torch
    from PIL import Image
    from lorastudio.core.data.images import fit_pixels
    from lorastudio.core.engine.vision.encoding import image_token_id
    with Image.open(image) as img:
        rgb = fit_pixels(img.convert("RGB"), max_pixels)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.tokenizer.apply_chat_template(messages, chat_template=processor.chat_template, tokenize=False,
                                                   add_generation_prompt=True)
    enc = processor(text=[text], images=[[rgb]], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)
    tokens = int((enc["input_ids"][0] == image_token_id(processor)).sum())
    if sized is not None:
        sized_image(rgb, enc, processor).save(sized)
    return reference_answer(processor.tokenizer, out[0, enc["input_ids"].shape[1]:].tolist()), tokens


def sized_image(rgb, enc, processor):
    """`rgb` at the size the processor made of it: its patch grid × patch size where it reports one
    (the Qwen-VL families' image_grid_thw), the size it resized to where it reports that (Pixtral's
    image_sizes; LLaVA-NeXT's image_sizes are the images' own), else as it is."""
    from PIL import Image
    grid = enc.get("image_grid_thw")
    patch = getattr(processor.image_processor, "patch_size", None)
    if grid is None and enc.get("image_sizes") is not None and hasattr(processor, "image_break_token"):
        rows, cols = (int(v) for v in enc["image_sizes"][0])
        return rgb.resize((cols, rows), Image.Resampling.BICUBIC)
    if grid is None or not isinstance(patch, int):
        return rgb
    _, rows, cols = (int(v) for v in grid[0])
    return rgb.resize((cols * patch, rows * patch), Image.Resampling.BICUBIC)


def image_check(model_file: Path, mmproj: Path, image: Path, prompt: str, reference: str, threads: int = 1,
                image_max_tokens: int = 0, model_type: str = "", timeout_s: float = IMAGE_TIMEOUT_S) -> dict:
    """Both files in llama.cpp (a LlamaCheckError when they do not load: the export fails), one answer
    with the image and one without it, asked in a child process that ends at `timeout_s` at the latest
    (llama_check.image_answers); the fidelity event's image fields. `image_max_tokens`: the budget
    llama.cpp gets (0: its own)."""
    found = image_answers(model_file, mmproj, image, prompt, IMAGE_NEW_TOKENS, threads=threads,
                          image_max_tokens=image_max_tokens, timeout_s=timeout_s)
    if "problem" in found:
        problem = found["problem"]
        if model_type in PARAGRAPH_TOKEN and "Invalid token" in problem:
            problem += (' (llama.cpp opens this family\'s overview image with the token "\\n\\n", which this '
                        "tokenizer does not have as one token)")
        return {"image_checked": False, "image_reference": reference, "image_problem": problem}
    answer, with_image, without = found["answer"], found["with_image"], found["without"]
    same = answer.rstrip("\ufffd").strip() == reference.rstrip("\ufffd").strip()
    tokens = with_image - without if isinstance(with_image, int) and isinstance(without, int) else None
    return {"image_checked": True, "image_answer": answer, "image_reference": reference, "image_agree": same,
            "image_tokens": tokens, "image_max_tokens": image_max_tokens or None}


def mmproj_tensors(path: Path) -> int:
    from gguf import GGUFReader
    return len(GGUFReader(str(path)).tensors)
