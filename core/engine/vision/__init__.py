"""Vision-language models in training: their processors, which modules LoRA adapts, examples with
images as token ids and labels, and the image tensors of a batch.

Processors. transformers 5 builds a video processor for the families that also read video (Qwen2-VL,
Qwen2.5-VL, SmolVLM), and video processors need torchvision, which may not be installed (no wheel
matches our torch pin on every platform). We never train on video, so the processor is loaded
without its video part (`image_only`): the same class, the same files, image path only. The class
comes from transformers itself (by processor_config.json's processor_class, else by model_type),
never from the model folder.

Encoding. The processor's chat template renders the conversation (user turns as content parts:
image, text); the processor expands each image placeholder into the image's tokens (how many
depends on the image's size and the family). Which tokens are the assistant's is found on token ids
the way core/data/chat_masks.py finds it on characters: the conversation up to each answer is
encoded with the generation prompt and with the answer, and the tokens in between are the answer.
Image tokens are never trained (label -100), whatever data.train_on says.

Batches. The token table keeps each row's image paths; a batch's image tensors (pixel values and
what the family needs beside them) are made when the batch is made, by the same processor, and their
image token count is checked against the row's.
"""
