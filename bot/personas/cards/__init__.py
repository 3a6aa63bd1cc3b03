"""Character cards: importing SillyTavern's cards and lorebooks, exporting personas.

    section    `CardInfo`: the `card` section of a persona file (pure data)
    errors     `CardError`: a bad card, naming the file and the field (exit 2)
    read       bytes of a PNG, JSON or CHARX file → a checked `Card` or `Book`
    macros     card macros ({{char}}, {{user}}, ...) → persona templates, and back
    build      a `Card` → persona YAML data, a `Book` → world YAML data
    write      staged files: nothing half-written
    export     a persona → Character Card V3 (PNG with ccv3 and chara, or JSON)
    cli        `bot personas import` and `bot personas export`

Kept free of imports here: `bot.personas.schema` imports `section`, and the other
modules import the schema.
"""
