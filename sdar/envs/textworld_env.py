"""``textworld:<kind>``: TextWorld games (cooking, treasure hunter, coin collector) as sdar environments.

Games come from TextWorld's challenge generators (``tw-cooking``, ``tw-treasure_hunter``,
``tw-coin_collector``), are generated on first use and cached on disk, keyed by (kind, settings,
seed, TextWorld version): ``reset(seed)`` with a seed seen before loads the cached game file, a new
seed generates (about 1-5 s) and compiles one with TextWorld's bundled Inform 7 compiler.

Where files go: everything is written under the cache folder (``cache_dir``; default
``$SDAR_CACHE_DIR/textworld`` or ``~/.cache/sdar/textworld``). Generation runs in a child Python
process whose ``HOME``, ``TMPDIR`` and working directory point inside the cache folder (the Inform
compiler otherwise writes ``$HOME/Inform`` and a temporary project under the system temp folder);
this process's own environment is never changed. Game meta-commands that write files or break the
session (``save``, ``restore``, ``script``, ``quit``, ``restart``, ``undo`` ...) are refused with
"Nothing happens." One exception outside the cache folder: Jericho (TextWorld's Z-machine player)
copies its ``libfrotz.so`` into a temporary folder of the system temp dir once per environment
instance and deletes it right away.

Example::

    env = make_env("textworld:cooking", cache_dir="/data/tw", max_steps=30, go=6)
    obs = env.reset(seed=3)      # obs.task: the objective; obs.admissible_actions: sorted commands
    result = env.step("examine cookbook")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .base import Observation, StepResult

try:  # fcntl is POSIX-only; elsewhere a process-wide lock stands in for the file lock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

#: Default generator settings per kind: small games suited to small models. Any of them can be
#: overridden through ``TextWorldEnv(**settings)``; see each challenge's docs for the meaning.
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    # one room, one ingredient to take, nothing to open / cook / cut: ~5 commands
    "cooking": {
        "recipe": 1,
        "take": 1,
        "go": 1,
        "open": False,
        "cook": False,
        "cut": False,
        "drop": False,
        "split": None,
    },
    # easy mode (5 rooms, no doors); level 5 gives a 3-step quest
    "treasure_hunter": {"level": 5},
    # a chain of 3 rooms, the coin at its end
    "coin_collector": {"level": 3},
}

#: TextWorld challenge name for each kind.
CHALLENGES: dict[str, str] = {
    "cooking": "tw-cooking",
    "treasure_hunter": "tw-treasure_hunter",
    "coin_collector": "tw-coin_collector",
}

#: First words of interpreter meta-commands that write files (save, script), need a yes/no answer
#: (quit, restart) or are unsupported (undo); they are refused instead of sent to the game.
BLOCKED_VERBS = frozenset(
    {"save", "restore", "load", "script", "transcript", "unscript", "noscript", "quit", "q", "restart"}
    | {"undo", "oops", "then", "verify", "version", "notify"}
)

NOTHING_HAPPENS = "Nothing happens."
MAX_COMMAND_CHARS = 190  # Jericho truncates input past 197 bytes
GENERATION_TIMEOUT_S = 600

# TextWorld games are not in Jericho's list of known games; TextWorld tracks score and state itself.
warnings.filterwarnings("ignore", message=r"Game '.*' is not fully supported", module="jericho")

_generation_count = 0
_count_lock = threading.Lock()
_process_lock = threading.Lock()  # stands in for file locks where fcntl is missing


def generation_count() -> int:
    """How many games this process has generated (cache hits do not count)."""
    return _generation_count


def default_cache_dir() -> Path:
    """``$SDAR_CACHE_DIR/textworld`` if that variable is set, else ``~/.cache/sdar/textworld``."""
    root = os.environ.get("SDAR_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "sdar"
    return base / "textworld"


def resolve_settings(kind: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The kind's default settings updated with ``overrides``; unknown kinds or keys raise ValueError."""
    if kind not in DEFAULT_SETTINGS:
        raise ValueError(f"kind must be one of {sorted(DEFAULT_SETTINGS)}; got {kind!r}")
    settings = dict(DEFAULT_SETTINGS[kind])
    for key, value in overrides.items():
        if key not in settings:
            raise ValueError(
                f"unknown setting {key!r} for textworld kind {kind!r}; known settings: {sorted(settings)}"
            )
        settings[key] = value
    json.dumps(settings)  # settings must be JSON-serialisable: they name the cache entry
    return settings


def game_key(kind: str, settings: Mapping[str, Any]) -> str:
    """Folder name of one (kind, settings, TextWorld version) family of games: ``<kind>-<hash>``."""
    import textworld

    blob = json.dumps(
        {"kind": kind, "settings": settings, "textworld": textworld.__version__}, sort_keys=True
    )
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``path`` (created if missing), across threads and processes."""
    if fcntl is None:  # pragma: no cover
        with _process_lock:
            yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_game(kind: str, settings: Mapping[str, Any], seed: int, cache_dir: Path) -> Path:
    """Path of the compiled game (``.z8``) for (kind, settings, seed), generating it if not cached.

    Generation runs in a child process (see the module docstring) writing into a staging folder
    that is renamed into place once complete, under a lock, so concurrent callers asking for the
    same game generate it once and never see a half-written one.
    """
    return _ensure_game(kind, settings, seed, cache_dir)[0]


def _ensure_game(kind: str, settings: Mapping[str, Any], seed: int, cache_dir: Path) -> tuple[Path, bool]:
    """:func:`ensure_game`, also telling whether this call generated the game."""
    global _generation_count
    family = Path(cache_dir) / game_key(kind, settings)
    game_dir = family / f"seed{seed}"
    game_file = game_dir / "game.z8"
    if game_file.is_file():
        return game_file, False
    family.mkdir(parents=True, exist_ok=True)
    settings_file = family / "settings.json"
    if not settings_file.is_file():
        staging = family / f".settings-{uuid.uuid4().hex}.json"
        staging.write_text(json.dumps({"kind": kind, "settings": settings}, indent=1, sort_keys=True))
        os.replace(staging, settings_file)
    with _file_lock(family / f"seed{seed}.lock"):
        if game_file.is_file():
            return game_file, False
        staging = family / f".seed{seed}-{uuid.uuid4().hex}"
        try:
            _generate_in_child(kind, settings, seed, staging / "game.z8", Path(cache_dir))
            if game_dir.exists():  # left incomplete by an older, interrupted run
                shutil.rmtree(game_dir)
            os.rename(staging, game_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with _count_lock:
            _generation_count += 1
    return game_file, True


def _generate_in_child(
    kind: str, settings: Mapping[str, Any], seed: int, output: Path, cache_dir: Path
) -> None:
    """Runs :func:`generate_game` in a child Python with HOME/TMPDIR/cwd inside ``cache_dir``."""
    home = cache_dir / ".home"
    tmp = cache_dir / ".tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"HOME": str(home), "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp)})
    env.pop("TEXTWORLD_DEBUG", None)  # keeps the Inform temp project from being left behind
    repo_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH")) if p)
    request = json.dumps({"kind": kind, "settings": dict(settings), "seed": seed, "output": str(output)})
    command = [sys.executable, "-m", "sdar.envs.textworld_env", "--generate", request]
    try:
        done = subprocess.run(
            command, env=env, cwd=tmp, capture_output=True, text=True, timeout=GENERATION_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"generating textworld:{kind} seed {seed} took over {exc.timeout} s") from exc
    if done.returncode != 0 or not output.is_file():
        raise RuntimeError(
            f"generating textworld:{kind} game (seed {seed}, settings {dict(settings)}) failed "
            f"(exit {done.returncode}):\n{done.stderr[-4000:]}"
        )


def generate_game(kind: str, settings: Mapping[str, Any], seed: int, output: str | Path) -> Path:
    """Generates and compiles one game in this process (``output``: the ``.z8`` path; the ``.json``
    and ``.ni`` files land beside it). Prefer :func:`ensure_game`, which caches and isolates it."""
    import textworld
    import textworld.challenges
    from textworld.generator import compile_game

    options = textworld.GameOptions()
    options.seeds = int(seed)
    options.path = str(output)
    options.file_ext = ".z8"
    options.force_recompile = True
    challenge_settings = dict(settings)
    if kind == "cooking":
        challenge_settings["recipe_seed"] = int(seed)
    _, make, _ = textworld.challenges.CHALLENGES[CHALLENGES[kind]]
    game = make(challenge_settings, options)
    return Path(compile_game(game, options))


def clean_feedback(text: str) -> str:
    """The game's text without the TextWorld banner, the trailing prompt/status line and extra blank lines."""
    lines = text.replace("\r", "").split("\n")
    banner_chars = set(" _|\\/$<>")
    lines = [line for line in lines if not (line.strip() and set(line) <= banner_chars)]
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and lines[-1].lstrip().startswith(">"):
        lines.pop()
    cleaned = "\n".join(line.rstrip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", cleaned).strip()


def sanitize_command(action: str) -> str | None:
    """The command sent to the game: first line, lowercase, only letters/digits/spaces/'-, at most
    :data:`MAX_COMMAND_CHARS` characters. None when nothing is left or it has a blocked word."""
    if not isinstance(action, str):
        return None
    first_line = action.strip().split("\n", 1)[0].lower()
    command = " ".join(re.sub(r"[^a-z0-9'\- ]", " ", first_line).split())[:MAX_COMMAND_CHARS].strip()
    if not command or any(word in BLOCKED_VERBS for word in command.split()):
        return None
    return command


class TextWorldEnv:
    """A TextWorld challenge game as an sdar environment (``make_env("textworld:<kind>")``).

    Args:
        kind: "cooking", "treasure_hunter" or "coin_collector".
        cache_dir: folder for generated games (and the generator's HOME/temp files); default
            :func:`default_cache_dir`.
        max_steps: the episode ends (not won) after this many steps.
        **settings: generator settings overriding :data:`DEFAULT_SETTINGS` for the kind (cooking:
            recipe, take, go, open, cook, cut, drop, split; the others: level).

    Observations: ``text`` is the game's response (banner and prompt removed), ``task`` the game's
    objective, ``admissible_actions`` the sorted admissible commands, ``info`` holds task_type
    (the kind), score, max_score, step, description, intermediate_reward. The reward of a step is
    the score gained by it; ``won`` comes from the game; the episode ends on a win, a loss or
    ``max_steps``. ``walkthrough`` holds the generator's solution of the current game (kept out of
    ``info`` so that it never reaches a prompt).
    """

    action_format = "action"

    def __init__(
        self,
        kind: str = "cooking",
        cache_dir: str | os.PathLike | None = None,
        max_steps: int = 50,
        **settings,
    ):
        self.settings = resolve_settings(kind, settings)
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer; got {max_steps!r}")
        try:
            import textworld
        except ImportError as exc:
            raise ImportError(
                f"textworld:{kind} needs the 'textworld' package (pip install textworld)"
            ) from exc

        self.kind = kind
        self.name = f"textworld:{kind}"
        self.max_steps = max_steps
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.games_generated = 0
        self.walkthrough: list[str] = []
        self._request = textworld.EnvInfos(
            admissible_commands=True,
            description=True,
            objective=True,
            score=True,
            max_score=True,
            won=True,
            lost=True,
            intermediate_reward=True,
            extras=["walkthrough"],
        )
        self._env = None  # the textworld environment, created on the first reset and reused
        self._game_file: Path | None = None
        self._task = ""
        self._score = 0
        self._max_score = 0
        self._step = 0
        self._done = True
        self._last: Observation | None = None

    def game_file(self, seed: int) -> Path:
        """The compiled game for ``seed`` (generated now if not cached)."""
        path, generated = _ensure_game(self.kind, self.settings, int(seed), self.cache_dir)
        self.games_generated += int(generated)
        return path

    def reset(self, seed: int) -> Observation:
        """Starts the game generated for ``seed`` (the same seed always gives the same game)."""
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(
                f"seed must be an integer in [0, 2**32) (TextWorld's generator seed); got {seed!r}"
            )
        path = self.game_file(seed)
        if self._env is None:
            import textworld

            self._env = textworld.start(str(path), self._request)
        elif path != self._game_file:
            self._env.load(str(path))
        self._game_file = path
        state = self._env.reset()
        self._task = state["objective"] or ""
        self._score = int(state["score"] or 0)
        self._max_score = int(state["max_score"] or 0)
        self._step = 0
        self._done = False
        self.walkthrough = list(state.get("extra.walkthrough") or [])
        self._last = self._observation(state, clean_feedback(state.feedback))
        return self._last

    def step(self, action: str) -> StepResult:
        """Plays one command. Inadmissible or garbage text never raises: the game answers (e.g.
        "That's not a verb I recognise.") or, for empty text and meta-commands, "Nothing happens."."""
        if self._env is None or self._last is None:
            raise RuntimeError(f"{self.name}: call reset(seed) before step()")
        if self._done:
            return StepResult(self._last, 0.0, True, False, {"already_done": True})
        self._step += 1
        command = sanitize_command(action)
        if command is None:
            state, text = None, NOTHING_HAPPENS
        else:
            state, _, _ = self._env.step(command)
            text = clean_feedback(state.feedback) or NOTHING_HAPPENS
        won = bool(state and state["won"])
        lost = bool(state and state["lost"])
        reward = 0.0
        if state is not None:
            score = int(state["score"] or 0)
            reward = float(score - self._score)
            self._score = score
        truncated = not (won or lost) and self._step >= self.max_steps
        self._done = won or lost or truncated
        observation = self._observation(state, text) if state is not None else self._repeat(text)
        self._last = observation
        info = {"task_type": self.kind, "score": self._score, "max_score": self._max_score}
        info.update({"step": self._step, "lost": lost, "truncated": truncated, "command": command})
        return StepResult(observation, reward, self._done, won, info)

    def _observation(self, state, text: str) -> Observation:
        info = {
            "task_type": self.kind,
            "score": self._score,
            "max_score": self._max_score,
            "step": self._step,
            "description": clean_feedback(state["description"] or ""),
            "intermediate_reward": state["intermediate_reward"],
        }
        return Observation(text, self._task, sorted(state["admissible_commands"] or []), info)

    def _repeat(self, text: str) -> Observation:
        """The previous observation's state with new text (for steps that did not reach the game)."""
        assert self._last is not None
        info = dict(self._last.info, step=self._step, intermediate_reward=0)
        return Observation(text, self._task, list(self._last.admissible_actions), info)

    def close(self) -> None:
        """Stops the game interpreter."""
        if self._env is not None:
            self._env.close()
            self._env = None
        self._last = None
        self._done = True

    def __enter__(self) -> TextWorldEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _main(argv: list[str]) -> int:
    """Child-process entry point: ``python -m sdar.envs.textworld_env --generate '<json request>'``."""
    if len(argv) != 2 or argv[0] != "--generate":
        print("usage: python -m sdar.envs.textworld_env --generate '<json request>'", file=sys.stderr)
        return 2
    request = json.loads(argv[1])
    generate_game(request["kind"], request["settings"], request["seed"], request["output"])
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
