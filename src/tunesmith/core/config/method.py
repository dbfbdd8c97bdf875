"""The ``method`` section: how weights are trained (full, freeze, LoRA and other adapters, pruning)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from tunesmith.core.config.base import Section


class LoraConfig(Section):
    r: int = Field(16, gt=0, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0, description="Scaling numerator (scale = alpha / r; alpha / sqrt(r) with rslora).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field(
        "all-linear",
        description="'all-linear' (the model family's attention and feed-forward projections) or module names.",
    )
    dora: bool = Field(False, description="DoRA: split each weight into magnitude and direction; LoRA the direction.")
    rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha / sqrt(r), steadier at high ranks.")


class QloraConfig(Section):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base weights.")
    double_quant: bool = Field(True, description="Also quantise the quantisation constants (saves ~0.4 bit/weight).")


class FreezeConfig(Section):
    train_layers: int = Field(2, ge=0, description="Train only the top N decoder layers; all others stay frozen.")
    train_head: bool = Field(True, description="Also train the output head (LM head or task head).")

    @model_validator(mode="after")
    def _check_something_trains(self) -> FreezeConfig:
        if self.train_layers == 0 and not self.train_head:
            raise ValueError("method.freeze trains nothing; set train_layers above 0 or train_head: true")
        return self


class PrefixConfig(Section):
    num_virtual_tokens: int = Field(20, gt=0, description="Trained key/value vectors prepended in every layer.")


class PromptConfig(Section):
    num_virtual_tokens: int = Field(20, gt=0, description="Trained embeddings prepended to the input.")
    init_text: str | None = Field(
        None,
        description="Initialise the virtual tokens from this text's token embeddings (repeated to fit); null: random.",
    )


class Ia3Config(Section):
    target_modules: list[str] | None = Field(
        None, description="Modules whose activations are rescaled; null: the model family's default (or peft's)."
    )
    feedforward_modules: list[str] | None = Field(
        None,
        description="Which of target_modules are feed-forward (scaled on the input); null: the family's default.",
    )

    @model_validator(mode="after")
    def _check_modules(self) -> Ia3Config:
        if (self.target_modules is None) != (self.feedforward_modules is None):
            raise ValueError("method.ia3: set both target_modules and feedforward_modules, or neither")
        if self.target_modules is not None and not set(self.feedforward_modules or []) <= set(self.target_modules):
            raise ValueError("method.ia3.feedforward_modules must be a subset of method.ia3.target_modules")
        return self


class AdapterConfig(Section):
    size: int = Field(64, gt=0, description="Bottleneck width of each adapter (down-projection size).")
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="Modules after whose output an adapter is added (residual); null: the model family's attention "
        "and feed-forward output projections (Llama, Qwen, Gemma, Phi-3: o_proj, down_proj; GPT-2: c_proj).",
    )


class PruneConfig(Section):
    layers: int = Field(1, gt=0, description="Decoder layers to drop (those that change the hidden state least).")
    calibration_rows: int = Field(16, gt=0, description="Training rows used to measure each layer's effect.")
    then: Literal["lora", "full"] = Field("lora", description="How the pruned model is fine-tuned.")


MethodName = Literal["full", "freeze", "lora", "qlora", "prefix", "prompt", "ia3", "adapter", "prune"]
# The settings sections each method reads; setting any other section is an error.
METHOD_SECTIONS: dict[str, tuple[str, ...]] = {
    "full": (),
    "freeze": ("freeze",),
    "lora": ("lora",),
    "qlora": ("lora", "qlora"),
    "prefix": ("prefix",),
    "prompt": ("prompt",),
    "ia3": ("ia3",),
    "adapter": ("adapter",),
    "prune": ("prune", "lora"),
}


class MethodConfig(Section):
    name: MethodName = Field(
        "lora",
        description="full: every weight; freeze: top layers and/or head; lora (dora/rslora options); "
        "qlora: LoRA on a 4-bit base (GPU); prefix / prompt: prefix or prompt tuning; ia3: learned rescaling; "
        "adapter: bottleneck adapter layers; prune: drop layers, then lora or full.",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    qlora: QloraConfig = Field(default_factory=QloraConfig)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    prefix: PrefixConfig = Field(default_factory=PrefixConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    ia3: Ia3Config = Field(default_factory=Ia3Config)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)

    def used_sections(self) -> set[str]:
        """The settings sections the chosen method reads."""
        used = set(METHOD_SECTIONS[self.name])
        if self.name == "prune" and self.prune.then != "lora":
            used.discard("lora")
        return used

    @model_serializer(mode="wrap")
    def _dump_used_sections(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The resolved config.yaml names only what the method reads, so it validates again when read back.
        return {k: v for k, v in handler(self).items() if k == "name" or k in self.used_sections()}

    @model_validator(mode="after")
    def _check_sections(self) -> MethodConfig:
        for section in sorted(self.model_fields_set - {"name"} - self.used_sections()):
            raise ValueError(
                f"method.{section} is set but method.name is '{self.name}'; "
                f"remove method.{section} or use name: {section}"
            )
        return self
