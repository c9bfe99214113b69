"""A corpus of bad uploads: every one is refused with a clear message and nothing is sent."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "bad-uploads"
EXPECTED = tomllib.loads((CORPUS / "expected.toml").read_text())


def test_corpus_is_complete():
    files = {p.name for p in CORPUS.iterdir() if p.name != "expected.toml"}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_web_app_refuses_with_a_clear_message(name, config):
    from webapp.validation import UploadError, prepare_upload

    with pytest.raises(UploadError) as exc:
        prepare_upload(name, (CORPUS / name).read_bytes(), config)
    assert EXPECTED[name].lower() in str(exc.value).lower()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_library_refuses_with_a_clear_message(name, config):
    from pipeline.errors import InputError
    from pipeline.readers import read_series
    from pipeline.windows import make_windows

    with pytest.raises(InputError) as exc:
        result = read_series(CORPUS / name, spec=config.series)
        if len(make_windows(result.frame, config.series, require_target=False)) == 0:
            raise InputError("no window")
        make_windows(result.frame, config.series)
    message = str(exc.value)
    assert Path(name).stem in message or "window" in message  # names the file, or says what the data lacks
