"""Parts every tiny model shares: the word-level tokenizer, the Llama-style decoder sizes, the
small CLIP tower and the finishing touches. The tiny families (``layerprobe.models.tiny``) and
the model organism (``layerprobe.organism.build``) are assembled from these, so a tokenizer or
config convention changes in one place and for all of them at once.

    tok = build_tokenizer(["cell0", "red"])
    text = LlamaConfig(**lm_kwargs(tok, num_layers=4, hidden=64, heads=4, kv_heads=2))
"""

from __future__ import annotations

from layerprobe.compat import set_post_processor

# Enough words to make benchmark questions and answers tokenize to mostly known tokens.
_WORDS = """
a an the is are was what which who where when how many much color colour of in on at to and or
it this that there these those yes no not none one two three four five six seven eight nine ten
zero red green blue yellow black white orange purple pink brown gray grey cat dog man woman person
people car bus sky tree water table cup coffee rocket clock coin coins page text word number
left right top bottom middle center cell image picture photo answer question using single phrase
when provided information insufficient respond with unanswerable reference ocr token tokens do does
USER ASSISTANT INST system chat between curious human artificial intelligence assistant gives
helpful detailed polite answers humans questions describe shown kind type wearing holding
""".split()


def build_tokenizer(extra_words: list[str] | None = None, special_tokens: dict[str, str] | None = None):
    """A word-level tokenizer instead of a real one: no download, a vocabulary of a few hundred
    rows (so embeddings stay tiny), and yet the real ``PreTrainedTokenizerFast`` the processors
    expect. ``special_tokens`` maps tokenizer attributes to tokens (other families' image markers)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special_tokens = special_tokens or {"image_token": "<image>"}
    specials = list(dict.fromkeys(["<unk>", "<s>", "</s>", "<pad>", *special_tokens.values()]))
    words = list(dict.fromkeys(_WORDS + [str(d) for d in range(10)] + list(extra_words or [])))
    punct = list(".,?!:;'\"()[]/-_\n")
    vocab = {tok: i for i, tok in enumerate(specials + words + punct)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=special_tokens,
        padding_side="left",
    )
    # LLaVA checkpoints prepend BOS; the visual tokens then never start the sequence.
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    set_post_processor(tok, backend.post_processor)
    return tok


def lm_kwargs(tok, num_layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int | None = None,
              max_positions: int = 2048) -> dict:
    """Keyword arguments of any Llama-style text config (Llama, Qwen2, Gemma 3, ...): the
    vocabulary and the special ids come from ``tok``, so they cannot disagree with it."""
    return dict(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def clip_tower_config(image_size: int, patch: int, hidden: int = 32, num_layers: int = 2):
    """A CLIP tower small enough that the decoder dominates every test's cost."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=num_layers, num_attention_heads=2,
        image_size=image_size, patch_size=patch,
    )


def finish(model, tok):
    """What ``from_pretrained`` would give a saved checkpoint: ``architectures`` set (the adapter
    registry looks it up), generation stopping at the tokenizer's EOS and padding with its PAD, and
    eval mode."""
    model.config.architectures = [type(model).__name__]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.eval()
    return model
