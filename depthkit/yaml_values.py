"""YAML values typed on a command line (``--option``, ``--dataset-option``, recipe ``key=value`` overrides through
:func:`depthkit.config.yaml_1_2_override`) read with YAML 1.2's numbers.

PyYAML implements YAML 1.1, where ``0100`` is the octal 64, ``1:30`` the base-60 90 and ``1e3`` a string. A user
typing ``query_budget=0100`` means 100. :func:`yaml_loader` is PyYAML's safe loader with YAML 1.2's core-schema
integers (decimal, ``0o`` octal, ``0x`` hex) and floats (``1e3``, ``.5``, ``.inf``, ``.nan``); everything else
(booleans, including 1.1's ``yes``/``off``, null, strings, lists, mappings) is the safe loader's, except that a
mapping that gives a key twice is an error (as OmegaConf's reader has it), not the last value silently winning.
Recipe files are read with it too (:func:`depthkit.config.load_recipe`).
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["yaml_loader"]

_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
                    r"|\.(?:nan|NaN|NAN))$")


def _construct_int(loader, node) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)  # leading zeros are decimal in YAML 1.2


@lru_cache(maxsize=1)
def yaml_loader():
    """A ``yaml.SafeLoader`` subclass whose integers and floats are YAML 1.2's (see the module docstring)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):  # a key given twice is an error, not the last one winning
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # the safe loader's own check refuses a key that cannot be one
                if key in seen:
                    raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                            f"found duplicate key {key}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(_INT_TAG, _INT, list("-+0123456789"))
    Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))
    Loader.add_constructor(_INT_TAG, _construct_int)
    return Loader
