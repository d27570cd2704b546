"""A small word-level vocabulary saved in `CLIPTokenizer` format.

The embedded model and the test fixtures need a tokenizer that works offline. CLIP's tokenizer is
byte-level BPE: a word becomes one token only if the merges rebuild it. We learn those merges with
textbook BPE on the given words, so every known word encodes to exactly one token and any other
text still tokenizes (into characters), exactly as with a real CLIP vocabulary.
"""

from __future__ import annotations

from collections import Counter

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    # The same printable mapping of bytes that GPT-2 and CLIP use.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Learns BPE merges until every word in `words` is a single symbol.

    Ties break on the pair itself, so the result is deterministic.
    """
    byte_map = _bytes_to_unicode()
    seqs: dict[str, list[str]] = {}
    for w in sorted(set(words)):
        chars = [byte_map[b] for b in w.encode("utf-8")]
        chars[-1] = chars[-1] + "</w>"
        seqs[w] = chars
    merges: list[tuple[str, str]] = []
    while True:
        counts: Counter[tuple[str, str]] = Counter()
        for seq in seqs.values():
            for a, b in zip(seq, seq[1:], strict=False):
                counts[(a, b)] += 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = out


def build_clip_tokenizer(words: list[str], model_max_length: int = 77):
    """Builds a `CLIPTokenizer` whose vocabulary holds every byte, the given words and CLIP's specials.

    Args:
        words (`list[str]`): lower-case words that must each encode to one token.
        model_max_length (`int`, *optional*, defaults to 77): padded sequence length, as in CLIP.
    """
    from transformers import CLIPTokenizer

    byte_chars = list(_bytes_to_unicode().values())
    merges = learn_merges(words)
    vocab_list = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab_list += list(SPECIAL_TOKENS)
    vocab: dict[str, int] = {}
    for tok in vocab_list:
        vocab.setdefault(tok, len(vocab))
    return CLIPTokenizer(
        vocab=vocab,
        merges=list(merges),
        model_max_length=model_max_length,
    )
