"""Reading the configuration fields that fairseq evaluates as Python expressions, without ``eval``.

fairseq stores a few structured settings as strings and turns them into values with ``eval``: above all
``conv_feature_layers`` of wav2vec2, HuBERT and data2vec-audio, whose default is the *expression*
``"[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"`` (``ast.literal_eval`` rejects it), and
``adam_betas`` (``"(0.9, 0.98)"``). A checkpoint is data from elsewhere; evaluating its strings would run whatever
they hold. :func:`literal_expr` evaluates the small language those fields use by walking the parsed syntax tree:

* integer and float constants, with unary ``-`` / ``+``;
* list and tuple displays;
* ``+`` between two lists, two tuples or two numbers; ``*`` between a list or tuple and a non-negative integer
  (either side) or between two numbers.

Anything else (names, attribute access, calls, subscripts, strings, comprehensions, ``**``, lambdas...) raises
``ValueError`` naming the field and the text. Results are capped at :data:`MAX_ITEMS` elements so that a
``[0] * 10**12``-style string cannot exhaust memory.
"""

from __future__ import annotations

import ast
from typing import Union

__all__ = ["MAX_ITEMS", "ConfigExpressionError", "conv_feature_layers", "literal_expr"]

Value = Union[int, float, list, tuple]

MAX_ITEMS = 100_000
"""The most elements (nested ones counted) an expression may produce."""

MAX_TEXT = 10_000
"""The longest text accepted (characters)."""


class ConfigExpressionError(ValueError):
    """A configuration string that is not one of the expressions :func:`literal_expr` evaluates."""


def _size(value: Value) -> int:
    """Number of elements in ``value``, nested ones included (a number counts as 1)."""
    if isinstance(value, (list, tuple)):
        return 1 + sum(_size(item) for item in value)
    return 1


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Walker:
    """Evaluates one parsed expression; ``fail`` builds the error naming the field and the text."""

    def __init__(self, field: str, text: object) -> None:
        self.field = field
        self.text = text

    def fail(self, why: str) -> ConfigExpressionError:
        return ConfigExpressionError(
            f"{self.field}={self.text!r}: {why}; only numbers, lists and tuples joined by + and * are read "
            "(fairseq's own expression form, evaluated without eval)"
        )

    def value(self, node: ast.AST) -> Value:
        if isinstance(node, ast.Constant):
            if not _is_number(node.value):
                raise self.fail(f"the constant {node.value!r} is not a number")
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.value(node.operand)
            if not _is_number(operand):
                raise self.fail("a sign applies to numbers only")
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            return self.binary(node.op, self.value(node.left), self.value(node.right))
        raise self.fail(f"{type(node).__name__} is not allowed")

    def binary(self, op: ast.operator, left: Value, right: Value) -> Value:
        if _is_number(left) and _is_number(right):
            result: Value = left + right if isinstance(op, ast.Add) else left * right
            return result
        if isinstance(op, ast.Add):
            if type(left) is type(right) and isinstance(left, (list, tuple)):
                return self.checked(left + right)  # type: ignore[operator]
            raise self.fail(f"cannot add {type(left).__name__} and {type(right).__name__}")
        sequence, count = (left, right) if isinstance(left, (list, tuple)) else (right, left)
        if not isinstance(sequence, (list, tuple)) or not isinstance(count, int) or isinstance(count, bool):
            raise self.fail(f"cannot multiply {type(left).__name__} by {type(right).__name__}")
        if count < 0:
            raise self.fail(f"a repetition count must be >= 0, got {count}")
        if count and _size(sequence) - 1 > MAX_ITEMS // count:
            raise self.fail(f"the result would exceed {MAX_ITEMS} elements")
        return self.checked(sequence * count)

    def checked(self, value: Value) -> Value:
        if _size(value) > MAX_ITEMS:
            raise self.fail(f"the result would exceed {MAX_ITEMS} elements")
        return value


def literal_expr(text: str, field: str) -> Value:
    """Evaluate a configuration string fairseq would ``eval`` (see the module docstring for what it may hold).

    Args:
        text: the string, e.g. ``"[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"``.
        field: the configuration key it comes from, for the error message
            (e.g. ``"model.w2v_args.model.conv_feature_layers"``).

    Returns:
        The number, list or tuple the expression denotes (what ``eval`` would return).

    Raises:
        ConfigExpressionError (a ``ValueError``): ``text`` is not a string, does not parse, holds anything but
            numbers, lists, tuples, ``+`` and ``*``, or produces more than :data:`MAX_ITEMS` elements; the message
            names ``field`` and ``text``.
    """
    walker = _Walker(field, text)
    if not isinstance(text, str):
        raise walker.fail(f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise walker.fail(f"longer than {MAX_TEXT} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise walker.fail(f"not an expression ({e.msg})") from None
    return walker.value(tree.body)


def conv_feature_layers(text: str, field: str = "conv_feature_layers") -> list[tuple[int, int, int]]:
    """The ``(channels, kernel, stride)`` triples of a wav2vec2-family ``conv_feature_layers`` string.

    Accepts a plain list (``"[(512, 10, 5), (512, 3, 2)]"``) and fairseq's expression form
    (``"[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"``).

    Raises:
        ConfigExpressionError (a ``ValueError``): naming ``field`` and the text, when it is not such an
            expression or not a non-empty list of triples of positive integers.
    """
    value = literal_expr(text, field)
    layers = value if isinstance(value, (list, tuple)) else None
    if not layers or not all(
        isinstance(layer, (list, tuple))
        and len(layer) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in layer)
        for layer in layers
    ):
        raise ConfigExpressionError(
            f"{field}={text!r} is not a non-empty list of (channels, kernel, stride) triples of positive integers"
        )
    return [tuple(layer) for layer in layers]  # type: ignore[misc]
