"""Files for the Hub say nothing about the machine they came from.

A run records local paths everywhere: the trainer's ``dartkit_adapter.json`` holds its data files,
output directory and init adapter as given on the command line (often absolute), PEFT's
``adapter_config.json`` the base's directory (for the embedded model a cache path under the home
directory), and the model card repeats some of them. On the Hub those paths name nothing and tell
readers the user's home directory and user name. :class:`Portable` rewrites them: a path inside the
run becomes the path relative to the run (found by its trailing components, so a run that was
moved or copied since still matches), any other path its last component only; the hashes beside
them (``data_sha256``, an adapter's ``sha256``, the base's ``weights_sha256``) identify the things.
:func:`local_paths` finds what is left, so a push can refuse rather than upload one.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dartkit.errors import DartkitError

# An absolute path (or ~/...) in free text or a JSON value: after the start, a space, a quote, a
# backtick, "=", "(", ",", "[" or ":" (as in `hf:/models/x`), never a URL's "//" nor "a/b".
ABSOLUTE_PATH = re.compile(r"(?<![^\s`'\"(=:,\[])(?:~/|/(?=[^\s/]))[^\s`'\"|),\]]*")


class Portable:
    """Rewrites local paths in strings and JSON-like values for a file that leaves the machine.

    Args:
        run: The run directory the files describe (None for an adapter outside a run).
        replacements: Exact strings to replace first (e.g. a local base directory -> its Hub id);
            only keys that contain a ``/`` are applied to free text, so a short name cannot
            rewrite unrelated words.
    """

    def __init__(self, run: Path | None, replacements: dict[str, str] | None = None):
        self.run = Path(run) if run is not None else None
        self._run_resolved = self.run.resolve() if self.run is not None else None
        self.replacements = {k: v for k, v in (replacements or {}).items() if k and "/" in k}

    def path(self, value: Any) -> str:
        """A path as the Hub may show it: relative to the run when it is in the run, else its name."""
        p = PurePath(str(value))
        if str(value).startswith("~"):
            p = Path(str(value)).expanduser()
        parts = [x for x in p.parts if x not in (p.anchor, "", ".")]
        if self.run is not None:
            if p.is_absolute():
                try:
                    rel = Path(p).resolve().relative_to(self._run_resolved)
                    return rel.as_posix() if rel.parts else "."
                except (ValueError, OSError):
                    pass
            # The longest trailing part that exists in the run: `runs/demo/m_int/adapter`
            # (relative to where `dartkit run` was started) -> `m_int/adapter`.
            for i in range(len(parts)):
                suffix = parts[i:]
                if ".." not in suffix and (self.run / Path(*suffix)).exists():
                    return PurePath(*suffix).as_posix()
        return parts[-1] if parts else "."

    def text(self, value: str) -> str:
        """``value`` with the known replacements made and every other absolute path rewritten."""
        for old in sorted(self.replacements, key=len, reverse=True):
            value = value.replace(old, self.replacements[old])
        return ABSOLUTE_PATH.sub(lambda m: self.path(m.group(0)), value)

    def spec(self, value: str) -> str:
        """A model spec with its local parts rewritten one by one (``hf:/home/me/base+adapter=/home/me/
        runs/x/m_int/adapter`` -> ``hf:base+adapter=m_int/adapter``); a Hub id, a server's model name
        and URL stay, less any ``user:password@`` in the URL (a key in a query string is not
        removed: keys belong in the environment). A string that is not a model spec (``file:...``)
        goes through :meth:`text`."""
        import dataclasses

        from dartkit.generate.spec import SpecError, parse_spec

        try:
            parsed = parse_spec(value)
        except SpecError:
            return self.text(value)
        changes: dict[str, str] = {}
        if parsed.kind in ("hf", "vllm") and _is_local(parsed.model):
            changes["model"] = self.path(parsed.model)
        elif parsed.kind == "openai" and parsed.model.startswith(("/", "~")):
            # `vllm serve /home/me/models/X` serves the model under its path.
            changes["model"] = self.path(parsed.model)
        if parsed.adapter:
            changes["adapter"] = self.path(parsed.adapter)
        if parsed.base_url:
            url = urlsplit(parsed.base_url)
            if "@" in url.netloc:  # user:password@host: credentials, never shown
                changes["base_url"] = urlunsplit(url._replace(netloc=url.netloc.rpartition("@")[2]))
        return str(dataclasses.replace(parsed, **changes)) if changes else value

    def tree(self, value: Any) -> Any:
        """:meth:`text` applied to every string in a JSON-like value (a new value; the input is kept)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.tree(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.tree(v) for v in value]
        return value


def _is_local(model: str) -> bool:
    """Whether a spec's model names a local directory rather than a Hub id (``org/name``)."""
    return model.startswith(("/", "~", ".")) or Path(model).expanduser().exists()


def local_paths(text: str) -> list[str]:
    """Absolute paths and the home directory in ``text`` (empty when it names nothing local)."""
    found = ABSOLUTE_PATH.findall(text)
    home = str(Path.home())
    if len(home) > 1 and home in text and home not in found:
        found.append(home)
    return found


def check_portable(files: dict[str, bytes | Path]) -> None:
    """Refuse to upload a local path: a built file (or a small text file sent as it is) naming one.

    Raises:
        DartkitError: naming the file and the path.
    """
    for name, data in files.items():
        if isinstance(data, Path):
            if data.stat().st_size > 1 << 20:
                continue  # weights: binary, sent as trained
            data = data.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        found = local_paths(text)
        if found:
            raise DartkitError(
                f"{name} would carry the local path {found[0]} to the Hub; remove it from the file "
                "it came from (or report it if dartkit wrote it); nothing was uploaded"
            )
