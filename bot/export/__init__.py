"""Fine-tune datasets from the ledger: consented, scrubbed, pseudonymous, streamed.

    run        `export_datasets(settings, now, ...)` -> `Manifest`: one export run
    dataset    windows, filters, dedup and DPO pairs (`FILTERS`, `ExportOptions`)
    select     the one streaming SQL query (consent, regenerations, votes decided in SQL)
    prompts    system prompts re-rendered from stored persona versions
    scrub      `Scrubber`, `SCRUBBER_VERSION`: personal data -> typed placeholders
    pseudonym  `Pseudonymizer`: keyed HMAC-SHA256 pseudonyms
    split      `split_of`: train/validation by conversation
    formats    OpenAI chat, ShareGPT and DPO record shapes
    writer     `DatasetWriter`: staging directory, manifest last, atomic rename
    cli        `bot export`

See docs/export.md for the dataset layout and the manifest.
"""

from __future__ import annotations

from bot.export.dataset import FILTERS, ExportOptions
from bot.export.errors import ExportError, OutputNotEmpty
from bot.export.pseudonym import Pseudonymizer
from bot.export.run import MANIFEST_VERSION, Manifest, default_out_dir, export_datasets
from bot.export.scrub import SCRUBBER_VERSION, Scrubber
from bot.export.split import split_of

__all__ = [
    "FILTERS",
    "MANIFEST_VERSION",
    "SCRUBBER_VERSION",
    "ExportError",
    "ExportOptions",
    "Manifest",
    "OutputNotEmpty",
    "Pseudonymizer",
    "Scrubber",
    "default_out_dir",
    "export_datasets",
    "split_of",
]
