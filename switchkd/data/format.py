"""The prompt format and the item schema shared by data generation, collate, evaluation and export.

One conversation turn is rendered as ``USER: {question} ASSISTANT: {answer}<eos>``; the first turn
is prefixed with the image placeholder ``<image>\\n`` (expanded to the model's N visual tokens by
collate and by the exported ``LlavaProcessor``). Only the answer tokens and their ``<eos>`` are
supervised.

Item schema (what every dataset split yields, one ``dict`` per row):

* train rows (multi-turn, LLaVA conversation style)::

    {"task": str, "image": PIL.Image, "conversations": [{"from": "human", "value": str},
                                                        {"from": "gpt", "value": str}, ...]}

  (a human value may start with ``<image>\\n``; it is stripped, the image always comes first.)

* val / test rows (single turn)::

    {"task": str, "image": PIL.Image, "question": str, "answer": str,
     "answers": list[str],   # pseudo-annotator answers for VQA accuracy ([] = use [answer])
     "options": list[str],   # multiple-choice option texts ([] for open-ended); the question
                             # text does NOT contain them: ``format_mc_question`` renders them
     "meta": str}            # JSON: task-specific fields (subtask, pair id, pope setting, ...)
"""

from __future__ import annotations

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN)

OPTION_LETTERS = ("A", "B", "C", "D", "E")

# Jinja chat template for the exported tokenizer/processor; renders exactly what
# ``user_text`` / ``answer_text`` produce, so HF ``apply_chat_template`` prompts match training.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first %}<image>\n{% endif %}"
    "USER: {% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}{% endif %} ASSISTANT:"
    "{% else %} {{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def user_text(question: str, *, first_turn: bool) -> str:
    """The unsupervised part of a turn (the image placeholder is added on the first turn)."""
    prefix = f"{IMAGE_TOKEN}\n" if first_turn else ""
    return f"{prefix}USER: {question} ASSISTANT:"


def answer_text(answer: str) -> str:
    """The supervised part of a turn, without ``<eos>`` (collate appends the eos id)."""
    return f" {answer}"


def format_mc_question(question: str, options: list[str], *, chinese: bool = False) -> str:
    """Render a multiple-choice question with lettered options, in a fixed layout."""
    lines = [question] + [f"{OPTION_LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    lines.append("请直接回答选项字母。" if chinese else "Answer with the option's letter.")
    return "\n".join(lines)


def strip_image_placeholder(text: str) -> str:
    """Remove a leading ``<image>`` placeholder (LLaVA JSON puts it in the first human turn)."""
    text = text.replace(IMAGE_TOKEN, "", 1) if text.lstrip().startswith(IMAGE_TOKEN) else text
    return text.strip()
