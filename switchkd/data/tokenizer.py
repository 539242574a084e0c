"""One byte-level BPE tokenizer shared by teacher and student (METHOD.md section 1: same vocab).

Trained only on train-split text plus a fixed answer vocabulary, so val/test text never shapes
it; byte-level fallback means no held-out string (e.g. an unseen OCR code) is out of vocabulary.
Saved as a ``transformers`` tokenizer folder that ``AutoTokenizer.from_pretrained(dir)`` reloads
offline.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from switchkd.data.format import (BOS_TOKEN, CHAT_TEMPLATE, EOS_TOKEN, IMAGE_TOKEN, PAD_TOKEN,
                                  SPECIAL_TOKENS, UNK_TOKEN)


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it as a HF fast tokenizer.

    Deterministic for a given ordered ``texts``. Special tokens get ids 0..4 in the order
    ``<pad> <unk> <bos> <eos> <image>``.
    """
    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def load_tokenizer(directory: str) -> PreTrainedTokenizerFast:
    """Load a tokenizer folder offline (never contacts a hub)."""
    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


def image_token_id(tokenizer: PreTrainedTokenizerFast) -> int:
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def vocabulary_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """A hash of the full token -> id map (compares tokenizer contents, not names)."""
    import hashlib
    import json

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
