"""What the agent reads and writes: the per-turn prompt and the response format.

Student prompt (rebuilt every turn, chat template applied when the tokenizer has one)::

    <instructions for the action format>
    Observation: <k turns ago>          \\
    Action: <what the agent did>         } the last K observation/action pairs
    Observation: <current observation>
    Admissible actions: a | b | c
    Task: <task>

The task comes last, next to where the agent writes: small models copy its object and target
names far more reliably from there.

The teacher reads the same prompt with the privileged skill context in front of it. Responses are
``<think>...</think><action>...</action>`` (``<search>``/``<answer>`` instead of ``<action>`` in the
search environment); anything else is an invalid response that still acts with its raw text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ACTION_INSTRUCTIONS = (
    "You are an agent in a text environment. Think briefly, then act. "
    "Answer as <think>your reasoning</think><action>one admissible action</action>"
)
SEARCH_INSTRUCTIONS = (
    "You are an agent answering a question with a search engine. Think briefly, then search or answer. "
    "Answer as <think>your reasoning</think><search>query</search> "
    "or <think>your reasoning</think><answer>answer</answer>"
)

_ACTION = re.compile(r"^\s*<think>(.*?)</think>\s*<action>(.*?)</action>\s*$", re.S)
_SEARCH = re.compile(r"^\s*<think>(.*?)</think>\s*<(search|answer)>(.*?)</\2>\s*$", re.S)


@dataclass(frozen=True)
class ParsedResponse:
    """A response split into its parts. ``action`` is what the environment receives: the tagged
    action (re-wrapped in its tag for the search format) when valid, else the raw text."""

    valid: bool
    think: str
    action: str


def parse_response(text: str, action_format: str = "action") -> ParsedResponse:
    """Parses ``<think>...</think><action>...</action>`` (or the search format) from a response."""
    if action_format == "search":
        match = _SEARCH.match(text)
        if match:
            tag, content = match.group(2), match.group(3).strip()
            return ParsedResponse(True, match.group(1).strip(), f"<{tag}>{content}</{tag}>")
        return ParsedResponse(False, "", text.strip())
    match = _ACTION.match(text)
    if match and match.group(2).strip():
        return ParsedResponse(True, match.group(1).strip(), match.group(2).strip())
    return ParsedResponse(False, "", text.strip())


def format_response(think: str, action: str, action_format: str = "action") -> str:
    """The response a perfect agent writes (used for demonstrations)."""
    if action_format == "search":
        return f"<think>{think}</think>{action}"
    return f"<think>{think}</think><action>{action}</action>"


def build_prompt(
    task: str,
    observation: str,
    admissible_actions: list[str],
    history: list[tuple[str, str]],
    *,
    action_format: str = "action",
    history_turns: int = 2,
) -> str:
    """The student's prompt text for one turn. ``history`` holds earlier (observation, action)
    pairs, oldest first; the last ``history_turns`` of them are shown."""
    lines = [SEARCH_INSTRUCTIONS if action_format == "search" else ACTION_INSTRUCTIONS]
    for past_observation, past_action in history[-history_turns:] if history_turns > 0 else []:
        lines.append(f"Observation: {past_observation}")
        lines.append(f"Action: {past_action}")
    lines.append(f"Observation: {observation}")
    if admissible_actions:
        lines.append("Admissible actions: " + " | ".join(admissible_actions))
    lines.append(f"Task: {task}")
    return "\n".join(lines)


def with_skills(prompt: str, skill_context: str) -> str:
    """The teacher's (or skill_grpo student's) prompt: the privileged context, then the prompt."""
    return skill_context + prompt


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of ``prompt`` as a user turn followed by the assistant's turn opening (chat template
    when the tokenizer has one, else the raw text)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
