"""Data: the MiniVL-10 offline suite, the LLaVA JSON loader, tokenizer, prompt format, collate."""
