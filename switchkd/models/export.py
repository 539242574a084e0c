"""Write a trained VLM as a Hugging Face folder that ``transformers`` loads on its own.

The folder holds the ``LlavaForConditionalGeneration`` weights (safetensors) and config, the
shared tokenizer, and a ``LlavaProcessor`` (SigLIP image processor + tokenizer + chat template)
so ``from_pretrained`` + ``generate`` answer questions about images with no switchkd import.
"""

from __future__ import annotations

from transformers import LlavaProcessor, PreTrainedTokenizerBase
from transformers.models.siglip import SiglipImageProcessorPil

from switchkd.data.format import CHAT_TEMPLATE, IMAGE_TOKEN
from switchkd.models.vlm import VLM


def build_processor(model: VLM, tokenizer: PreTrainedTokenizerBase) -> LlavaProcessor:
    """The processor matching switchkd's collate: resize to the tower's size, scale to [-1, 1]."""
    vision = model.config.vision_config
    image_processor = SiglipImageProcessorPil(
        size={"height": vision.image_size, "width": vision.image_size},
        do_normalize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                          patch_size=vision.patch_size, vision_feature_select_strategy="full",
                          chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
                          num_additional_image_tokens=0)


def save_hf_folder(model: VLM, tokenizer: PreTrainedTokenizerBase, directory: str) -> str:
    """``save_pretrained`` the model, tokenizer and processor into ``directory``."""
    model.hf.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    build_processor(model, tokenizer).save_pretrained(directory)
    return directory
