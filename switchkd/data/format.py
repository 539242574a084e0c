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


# How the assistant answers a multiple-choice question (``data.mc_response``), and the
# instruction line that asks for it, in English and in Chinese (mmbcn).
MC_RESPONSES = ("letter", "text_letter")
MC_INSTRUCTIONS = {
    "letter": ("Answer with the option's letter.", "请直接回答选项字母。"),
    "text_letter": ("Answer with the option's text, then its letter.",
                    "请回答选项内容，然后是选项字母。"),
}


def format_mc_question(question: str, options: list[str], *, chinese: bool = False,
                       response: str = "letter") -> str:
    """Render a multiple-choice question with lettered options, in a fixed layout, ending with
    the instruction for ``response`` (one of ``MC_RESPONSES``)."""
    lines = [question] + [f"{OPTION_LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    lines.append(MC_INSTRUCTIONS[response][int(chinese)])
    return "\n".join(lines)


def mc_answer(options: list[str], index: int, *, response: str = "letter") -> str:
    """The assistant's answer choosing ``options[index]``: its letter (``"B"``) or, for
    ``text_letter``, the option's text and then its letter (``"blue (B)"``)."""
    letter = OPTION_LETTERS[index]
    return letter if response == "letter" else f"{options[index]} ({letter})"


def parse_mc_question(text: str) -> tuple[str, list[str], bool] | None:
    """Invert ``format_mc_question`` for a letter-response question: ``(stem, options,
    chinese)``, or ``None`` when ``text`` is not one (e.g. an open-ended question)."""
    lines = text.split("\n")
    if len(lines) < 3 or lines[-1] not in MC_INSTRUCTIONS["letter"]:
        return None
    body = lines[:-1]
    for start in range(1, len(body) - 1):  # the first line is always stem; >= 2 options
        tail = body[start:]
        if len(tail) <= len(OPTION_LETTERS) and all(
                line.startswith(f"{OPTION_LETTERS[j]}. ") for j, line in enumerate(tail)):
            return "\n".join(body[:start]), [line[3:] for line in tail], \
                lines[-1] == MC_INSTRUCTIONS["letter"][1]
    return None


def strip_image_placeholder(text: str) -> str:
    """Remove a leading ``<image>`` placeholder (LLaVA JSON puts it in the first human turn)."""
    text = text.replace(IMAGE_TOKEN, "", 1) if text.lstrip().startswith(IMAGE_TOKEN) else text
    return text.strip()
