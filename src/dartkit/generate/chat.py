"""Fitting a conversation to a model's chat template (shared by generation and training)."""

from __future__ import annotations

from dartkit.errors import DartkitError
from dartkit.generate.base import Messages


def fit_to_template(tokenizer, messages: Messages, model: str) -> Messages:
    """The conversation as the model's chat template accepts it.

    Templates that reject a system turn (e.g. Gemma-2, Mistral v0.1) get the system text
    at the top of the first user turn, so training and generation render the same prompt.

    Raises:
        DartkitError: the model has no chat template, or its template fails for another reason.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise DartkitError(f"model '{model}' has no chat template; use an instruction-tuned (chat) model")
    try:
        tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return list(messages)
    except Exception as e:  # jinja2 TemplateError raised by the template itself
        if not (len(messages) > 1 and messages[0]["role"] == "system" and messages[1]["role"] == "user"):
            raise DartkitError(f"model '{model}': its chat template failed: {e}") from None
        merged = {"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
        return [merged, *messages[2:]]
