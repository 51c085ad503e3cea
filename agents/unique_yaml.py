"""YAML as memstream's own files are read (sweep files and their fields, benchmark suite files): safe, and a key
given twice in one mapping is refused rather than silently replaced."""

from __future__ import annotations

import yaml

from agents.config import ConfigError


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML kept the last one silently: a second
    `seeds:` or a second entry for one env in a suite file replaced the first without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be set again here
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):  # an unhashable key: the base class names it
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice (line "
                                                        f"{key_node.start_mark.line + 1}); give it once")
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(where: str, text: str):
    """A sweep file's text or one field of it (YAML, as written in agents/conf/sweep/), or a suite file's."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
