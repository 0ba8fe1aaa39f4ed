"""The code in README.md runs as written."""

from __future__ import annotations

import pathlib
import re

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks(starting_with: str) -> list[str]:
    return [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if b.startswith(starting_with)]


def test_custom_environment_snippet_runs():
    (block,) = python_blocks("from sdar.envs import EnvPool")
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    observations = namespace["observations"]
    assert len(observations) == 8 and observations[0].task == "Your task is to: say 3"
    assert observations[4].task == "Your task is to: say 4"
    echo = namespace["Echo"]()
    echo.reset(2)
    assert echo.step("say 1").won is False and echo.step("say 2").won is True


def test_the_first_two_commands_are_the_setup_and_the_test_command():
    commands = re.findall(r"```bash\n(.*?)```", README, re.S)[:2]
    assert "scripts/install.sh" in commands[0]
    assert "pytest" in commands[1]
