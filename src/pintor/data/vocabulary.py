"""The words of the shapes-world caption grammar (see `pintor.data.shapes`)."""

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
SHAPES = ("circle", "square", "triangle", "star")
BACKGROUNDS = ("white", "black", "gray")
NUMBERS = ("two", "three", "four")
RELATIONS = ("to the left of", "to the right of", "above", "below")

WORDS = tuple(
    dict.fromkeys(
        ["a", "an", "and", "on", "background", *COLOURS, *SHAPES, *(s + "s" for s in SHAPES), *BACKGROUNDS, *NUMBERS]
        + [w for r in RELATIONS for w in r.split()]
    )
)
