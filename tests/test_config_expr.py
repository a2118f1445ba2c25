"""fairseq's expression-valued configuration strings, read without eval (fairseq_kt.config_expr)."""

from __future__ import annotations

import pytest

from fairseq_kt.config_expr import MAX_ITEMS, ConfigExpressionError, conv_feature_layers, literal_expr

FAIRSEQ_DEFAULT = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
LARGE = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"  # the vox / XLS-R releases
STACK = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


@pytest.mark.parametrize(
    "text, expected",
    [
        (FAIRSEQ_DEFAULT, STACK),
        (LARGE, STACK),
        (str(STACK), STACK),  # the plain-list form (what tiny_w2v writes)
        ("[(32, 10, 5)] + 2 * [(32, 3, 2)]", [(32, 10, 5), (32, 3, 2), (32, 3, 2)]),
        ("(0.9, 0.98)", (0.9, 0.98)),  # adam_betas
        ("(0.9,0.98)", (0.9, 0.98)),
        ("[-1, +2, 3 * 4, 1 + 1]", [-1, 2, 12, 2]),
        ("[] * 0 + []", []),
        (" [(1, 2, 3)] ", [(1, 2, 3)]),
    ],
)
def test_evaluates_fairseqs_expression_form(text, expected):
    assert literal_expr(text, "f") == expected
    assert literal_expr(text, "f") == eval(text)  # what fairseq computes  # noqa: S307


def test_conv_feature_layers_triples():
    assert conv_feature_layers(FAIRSEQ_DEFAULT) == STACK
    assert conv_feature_layers(LARGE, "model.conv_feature_layers") == STACK
    for bad in ("[]", "[(512, 10)]", "[(512, 10, 0)]", "[(512, 10.0, 5)]", "(512, 10, 5)", "7"):
        with pytest.raises(ConfigExpressionError, match=r"model\.x=.*\(channels, kernel, stride\)"):
            conv_feature_layers(bad, "model.x")


MALICIOUS = {
    "__import__('os').system('echo pwned')": "Call",
    "os.system('x')": "Call",
    "().__class__.__bases__[0].__subclasses__()": "Call",
    "[(512, 10, 5)] + x": "Name",
    "[(512, 10, 5)].__class__": "Attribute",
    "[1][0]": "Subscript",
    "'a' * 3": "constant 'a' is not a number",
    "[True] * 2": "constant True is not a number",
    "[None]": "constant None is not a number",
    "[i for i in range(3)]": "ListComp",
    "lambda: 0": "Lambda",
    "2 ** 10": "BinOp",  # only + and * are operators here
    "[1] - [1]": "BinOp",
    "{1: 2}": "Dict",
    "{1}": "Set",
    "[1] + (1,)": "cannot add list and tuple",
    "[1] * [2]": "cannot multiply list by list",
    "[1] * 2.0": "cannot multiply list by float",
    "[1] * -1": "repetition count must be >= 0",
    "-[1]": "a sign applies to numbers only",
    "[(512, 10, 5)] +": "not an expression",
    "x = 1": "not an expression",
    "f'{1}'": "JoinedStr",
    "(yield)": "Yield",
}


@pytest.mark.parametrize("text", sorted(MALICIOUS))
def test_refuses_everything_else_naming_field_and_text(text):
    with pytest.raises(ConfigExpressionError) as info:
        literal_expr(text, "model.w2v_args.model.conv_feature_layers")
    message = str(info.value)
    assert message.startswith(f"model.w2v_args.model.conv_feature_layers={text!r}: ")
    assert MALICIOUS[text] in message
    assert isinstance(info.value, ValueError)


def test_refuses_memory_bombs_and_non_strings():
    with pytest.raises(ConfigExpressionError, match=f"exceed {MAX_ITEMS} elements"):
        literal_expr("[0] * 100000000000", "f")
    with pytest.raises(ConfigExpressionError, match=f"exceed {MAX_ITEMS} elements"):
        literal_expr("[[0] * 1000] * 1000", "f")
    with pytest.raises(ConfigExpressionError, match="longer than"):
        literal_expr("[" + "1," * 20000 + "]", "f")
    with pytest.raises(ConfigExpressionError, match="f=None: expected a string, got NoneType"):
        literal_expr(None, "f")  # type: ignore[arg-type]
