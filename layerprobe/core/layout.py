"""Token layout of a batch: which positions are system prefix, visual tokens, question text,
the last prompt token and generated tokens, derived from the input ids of each forward call.

    layout = TokenLayout.from_ids(input_ids, attention_mask, visual=input_ids == image_token_id)
    layout.visual          # (B, T) bool: keys that carry the image
    layout.text_after      # (B, T) bool: every text position after the image (generated included)
    layout.first_text      # (B,) index of the first text token after the visual tokens

Positions are indices into the (left-padded) sequence as the model's key/value cache holds it, so
they stay valid across decode steps; nothing assumes a token count or a prompt length. Which of
these positions an edge set edits is its own definition (``layerprobe.core.edges``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from layerprobe.errors import ConfigError


@dataclass
class TokenLayout:
    valid: torch.Tensor  # (B, T) not padding
    visual: torch.Tensor  # (B, T) visual-token positions (tiles and newline tokens included)
    prompt_len: int  # positions >= prompt_len were generated
    # (B, T) the question's own tokens, where the caller said where the question is (encode(questions=))
    question_tokens: torch.Tensor | None = None
    # (B,) int64 each sample's key, for per-sample seeded choices (encode(sample_ids=))
    sample_keys: torch.Tensor | None = None

    @classmethod
    def from_ids(cls, input_ids, attention_mask, visual, prompt_len: int | None = None,
                 question: torch.Tensor | None = None, sample_keys: torch.Tensor | None = None) -> "TokenLayout":
        valid = torch.ones_like(visual) if attention_mask is None else attention_mask[:, : visual.shape[1]].bool()
        return cls(valid=valid, visual=visual & valid, prompt_len=prompt_len or visual.shape[1],
                   question_tokens=None if question is None else question & valid, sample_keys=sample_keys)

    @property
    def length(self) -> int:
        return self.visual.shape[1]

    @property
    def positions(self) -> torch.Tensor:
        return torch.arange(self.length, device=self.visual.device)

    @property
    def last_visual(self) -> torch.Tensor:
        """(B,) index of the last visual token, -1 where a sample has none."""
        idx = torch.where(self.visual, self.positions, torch.full_like(self.positions, -1))
        return idx.max(dim=1).values

    @property
    def first_text(self) -> torch.Tensor:
        """(B,) index of the first text token after the visual tokens."""
        return self.last_visual + 1

    @property
    def text_after(self) -> torch.Tensor:
        has_image = self.last_visual >= 0
        after = self.positions[None] > self.last_visual[:, None]
        return self.valid & after & has_image[:, None]

    @property
    def generated(self) -> torch.Tensor:
        return self.valid & (self.positions[None] >= self.prompt_len)

    @property
    def last_prompt(self) -> torch.Tensor:
        out = torch.zeros_like(self.visual)
        out[:, self.prompt_len - 1] = True
        return out & self.valid

    @property
    def prompt_text(self) -> torch.Tensor:
        """Post-image prompt text except the last prompt token: the question, any instruction
        around it and the chat template's tokens."""
        return self.text_after & ~self.generated & ~self.last_prompt

    @property
    def question(self) -> torch.Tensor:
        """The question's own tokens (not the instruction after it, not the template's tokens)."""
        if self.question_tokens is None:
            raise ConfigError("edges='image->question' (or another edge set on the question) needs the question's "
                              "tokens: encode the batch with loaded.encode(images, prompts, questions=...) (the "
                              "sweep does), or use 'image->prompt' for all prompt text after the image")
        return self.question_tokens

    def allowed(self, q_pos: torch.Tensor) -> torch.Tensor:
        """(B, q, kv) bool: what queries at ``q_pos`` may attend to without any edit (causal, no
        padding keys)."""
        kv = self.positions.to(q_pos.device)
        return (kv[None, :] <= q_pos[:, None])[None] & self.valid[:, None, :]

    def extend(self, n_new: int, attention_mask=None) -> "TokenLayout":
        """The layout after ``n_new`` more tokens (generated ones unless still inside the prompt)."""
        pad = torch.zeros(self.visual.shape[0], n_new, dtype=torch.bool, device=self.visual.device)
        valid = torch.cat([self.valid, ~pad], dim=1)
        if attention_mask is not None and attention_mask.shape[1] >= valid.shape[1]:
            valid = attention_mask[:, : valid.shape[1]].bool()
        return self.appended(pad, valid)

    def appended(self, visual: torch.Tensor, valid: torch.Tensor) -> "TokenLayout":
        """This layout followed by new positions (``visual`` among them; ``valid`` the whole row)."""
        question = None if self.question_tokens is None else torch.cat(
            [self.question_tokens, torch.zeros_like(visual)], dim=1)
        return replace(self, valid=valid, visual=torch.cat([self.visual, visual], dim=1), question_tokens=question)

    def truncate(self, length: int) -> "TokenLayout":
        question = None if self.question_tokens is None else self.question_tokens[:, :length]
        return replace(self, valid=self.valid[:, :length], visual=self.visual[:, :length],
                       prompt_len=min(self.prompt_len, length), question_tokens=question)
