"""Argument checks that builders share: each error names the field, the value and the fix."""

from __future__ import annotations


def image_input(model: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width), or an error saying the model needs images."""
    if len(input_shape) != 3:
        raise ValueError(
            f"model {model} needs image input (channels, height, width), got {input_shape}; "
            "use an image dataset (data.features with a deepyard.shape of 3 numbers)"
        )
    channels, height, width = input_shape
    return channels, height, width


def token_input(model: str, input_shape: tuple[int, ...]) -> int:
    """The longest row of token ids, or an error saying the model needs `data.text`."""
    if len(input_shape) != 1:
        raise ValueError(
            f"model {model} reads token ids, got inputs of shape {input_shape}; set data.text "
            "(a column of strings) and data.tokenizer"
        )
    return input_shape[0]


def positive(model: str, **values: int | float) -> None:
    for field, value in values.items():
        if value <= 0:
            raise ValueError(
                f"model.args.{field}={value} for model {model} must be positive; "
                f"use e.g. {field}: 1 or more"
            )


def dropout(model: str, value: float, field: str = "dropout") -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"model.args.{field}={value} for model {model} is a probability of dropping a "
            "unit; use a value in [0, 1), e.g. 0.1"
        )


def divides(model: str, field: str, value: int, by_field: str, by: int) -> None:
    if value % by:
        raise ValueError(
            f"model.args.{field}={value} for model {model} must divide by {by_field}={by}; "
            f"use a multiple of {by}, e.g. {by * max(1, value // by)}"
        )
