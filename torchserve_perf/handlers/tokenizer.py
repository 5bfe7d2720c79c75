"""A hashed-word tokenizer that ships with the package: no vocabulary file to download or lose.

Words and punctuation are lower-cased and hashed (CRC-32, stable across processes) into
``vocab_size - FIRST_ID`` buckets. Id 0 is padding and id 2 opens every sequence.
"""

from __future__ import annotations

import re
import zlib

PAD_ID, UNK_ID, CLS_ID = 0, 1, 2
FIRST_ID = 3
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def tokenize(text: str, vocab_size: int, max_length: int) -> list[int]:
    ids = [CLS_ID]
    for token in _TOKEN.findall(text.lower()):
        if len(ids) >= max_length:
            break
        ids.append(FIRST_ID + zlib.crc32(token.encode("utf-8")) % (vocab_size - FIRST_ID))
    return ids
