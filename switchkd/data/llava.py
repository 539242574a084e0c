"""Load LLaVA-style conversation JSON plus an image folder as train rows.

The file is a JSON list of records::

    {"id": "000001", "image": "coco/000001.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"},
                       {"from": "gpt", "value": "A cat."}, ...]}

Each record becomes one row of the train schema of ``switchkd.data.format``
(``{"task": "llava", "image": PIL.Image, "conversations": [...]}``). The ``<image>`` placeholder
may sit at the start or the end of the first human message (both occur in LLaVA data); it is
moved to the start, which is where the collator expects it. Text-only records are not supported:
every row of a ``Batch`` carries an image.
"""

from __future__ import annotations

import json
import os
from typing import Any

import datasets

from switchkd.data.format import IMAGE_TOKEN

LLAVA_TASK = "llava"
ROLES = ("human", "gpt")


class LlavaFormatError(ValueError):
    """A LLaVA JSON file or one of its records is malformed; the message names file and record."""


def read_llava(json_path: str, image_dir: str) -> list[dict[str, Any]]:
    """Read and validate a LLaVA conversation file.

    Returns:
        One dict per record: ``{"task": "llava", "image": <absolute image path>,
        "conversations": [{"from": "human"|"gpt", "value": str}, ...]}``, in file order, the
        ``<image>`` placeholder normalised to a leading ``"<image>\\n"`` of the first message.

    Raises:
        FileNotFoundError: the JSON file, the image folder or a referenced image is missing.
        LlavaFormatError: invalid JSON, a missing key, a bad role or role order, an empty
            conversation, or a misplaced ``<image>`` placeholder.
    """
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"LLaVA JSON file not found: {json_path}")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"LLaVA image folder not found: {image_dir} (for {json_path})")
    with open(json_path, encoding="utf-8") as f:
        try:
            records = json.load(f)
        except json.JSONDecodeError as err:
            raise LlavaFormatError(f"{json_path}: not valid JSON ({err})") from err
    if not isinstance(records, list) or not records:
        raise LlavaFormatError(f"{json_path}: expected a non-empty JSON list of records")
    return [_read_record(record, i, json_path, image_dir) for i, record in enumerate(records)]


def load_llava(json_path: str, image_dir: str) -> datasets.Dataset:
    """``read_llava`` as a ``datasets.Dataset`` whose ``image`` column decodes to PIL lazily."""
    return records_to_dataset(read_llava(json_path, image_dir))


def records_to_dataset(records: list[dict[str, Any]]) -> datasets.Dataset:
    """Rows from ``read_llava`` as a dataset (images stay files until a row is read)."""
    features = datasets.Features({
        "task": datasets.Value("string"),
        "image": datasets.Image(),
        "conversations": datasets.List({"from": datasets.Value("string"),
                                        "value": datasets.Value("string")}),
    })
    columns = {name: [r[name] for r in records] for name in ("task", "image", "conversations")}
    return datasets.Dataset.from_dict(columns, features=features)


def _read_record(record: Any, index: int, json_path: str, image_dir: str) -> dict[str, Any]:
    where = f"{json_path}, record {index}"
    if isinstance(record, dict) and "id" in record:
        where += f" (id {record['id']!r})"
    if not isinstance(record, dict):
        raise LlavaFormatError(f"{where}: expected an object, got {type(record).__name__}")
    for key in ("image", "conversations"):
        if key not in record:
            hint = " (text-only records are not supported)" if key == "image" else ""
            raise LlavaFormatError(f"{where}: missing key {key!r}{hint}")
    if not isinstance(record["image"], str) or not record["image"]:
        raise LlavaFormatError(f"{where}: 'image' must be a relative path string")
    image_path = os.path.abspath(os.path.join(image_dir, record["image"]))
    if not os.path.isfile(image_path):
        raise FileNotFoundError(f"{where}: image {record['image']!r} not found at {image_path}")
    return {"task": LLAVA_TASK, "image": image_path,
            "conversations": _read_conversations(record["conversations"], where)}


def _read_conversations(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise LlavaFormatError(f"{where}: 'conversations' must be a non-empty list")
    if len(messages) % 2:
        raise LlavaFormatError(f"{where}: {len(messages)} messages; expected human/gpt pairs")
    out = []
    for k, message in enumerate(messages):
        if not isinstance(message, dict):
            raise LlavaFormatError(f"{where}, message {k}: expected an object")
        for key in ("from", "value"):
            if key not in message:
                raise LlavaFormatError(f"{where}, message {k}: missing key {key!r}")
        role, value = message["from"], message["value"]
        if role not in ROLES:
            raise LlavaFormatError(f"{where}, message {k}: unknown role {role!r}; "
                                   f"expected one of {list(ROLES)}")
        if role != ROLES[k % 2]:
            raise LlavaFormatError(f"{where}, message {k}: role {role!r} out of order; messages "
                                   "must alternate human, gpt, human, ...")
        if not isinstance(value, str):
            raise LlavaFormatError(f"{where}, message {k}: 'value' must be a string")
        out.append({"from": role, "value": value})

    first = out[0]["value"]
    if first.count(IMAGE_TOKEN) > 1 or any(IMAGE_TOKEN in m["value"] for m in out[1:]):
        raise LlavaFormatError(f"{where}: {IMAGE_TOKEN} must appear at most once, in the first "
                               "human message")
    text = first.replace(IMAGE_TOKEN, "").strip()
    out[0] = {"from": "human", "value": f"{IMAGE_TOKEN}\n{text}"}
    return out
