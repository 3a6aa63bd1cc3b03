"""Character cards: importing SillyTavern's cards and lorebooks, exporting personas.

    section    `CardInfo`: the `card` section of a persona file (pure data)
    errors     `CardError`: a bad card, naming the file and the field (exit 2)
    png        PNG chunks read within bounds (CRCs, sizes, inflation) and written
    charx      CHARX zips read within bounds (names, links, sizes, members)
    read       a file's bytes → a checked `Card` (card) or `Book` (book)
    macros     card macros ({{char}}, {{user}}, ...) → persona templates, and back
    dialogue   mes_example's <START> blocks ↔ persona example dialogues
    build      a `Card` → persona data, a `Book` → lore entries or a world
    write      YAML people can read; staged writes, nothing half-done
    importer   `import_files`: every input checked, then all written or none
    export     a persona → Character Card V3 (PNG with ccv3 and chara, or JSON)
    cli        `bot personas import` and `bot personas export`

Kept free of imports here: `bot.personas.schema` imports `section`, and the other
modules import the schema.
"""
